import pytest

from migperf.runner import cell_env
from migperf.spec import SpecError, expand, load_spec, parse_cpu_device, validate_spec

BASE = {"name": "t", "experiments": [{"workloads": ["resnet18"], "devices": ["cpu"], "batch_sizes": [1],
                                      "modes": ["inference"]}]}


def _spec(**exp):
    d = {"name": "t", "experiments": [{**BASE["experiments"][0], **exp}]}
    return validate_spec(d, "s.yaml")


def test_matrix_expansion_and_defaults():
    s = validate_spec({"name": "m", "seed": 5, "defaults": {"image_size": 32, "stop": {"min_iters": 3}},
                       "experiments": [{"workloads": ["resnet18", {"model": "distilbert", "warmup_iters": 1}],
                                        "devices": ["cpu:0", "cpu:1"], "batch_sizes": [1, 4], "seq_lens": [16, 32],
                                        "modes": ["train", {"open_loop": {"rates": [5, 10]}}], "repeats": 2}]})
    groups = expand(s)
    cells = [c for g in groups for c in g]
    # repeats × (resnet: 1 seq + distilbert: 2 seqs) × bs × modes × devices
    assert len(cells) == 2 * 3 * 2 * 2 * 2 and all(len(g) == 1 for g in groups)
    assert [c["cell"] for c in cells] == list(range(len(cells)))
    r = next(c for c in cells if c["model"] == "resnet18")
    assert r["seq_len"] is None and r["image_size"] == 32 and r["stop"]["min_iters"] == 3 and r["seed"] == 5
    assert r["stop"]["max_time_s"] == 30.0 and r["dcgm"]["source"] == "auto"   # the rest from config.DEFAULTS
    d = [c for c in cells if c["model"] == "distilbert"]
    assert {c["seq_len"] for c in d} == {16, 32} and {c["warmup_iters"] for c in d} == {1}
    ol = next(c for c in cells if c["mode"] == "open_loop")
    assert ol["open_loop"]["rates"] == [5.0, 10.0] and ol["open_loop"]["duration_s"] == 600.0   # LoadGen minimum
    assert ol["open_loop"]["rules"] == "loadgen" and ol["open_loop"]["server"]["max_batch"] == 1
    quick = [c for g in expand(s, quick=True) for c in g if c["mode"] == "open_loop"]
    assert {c["open_loop"]["rules"] for c in quick} == {"quick"}
    assert {c["seed"] for c in cells} == {5, 6}


def test_concurrent_groups_and_mig_all():
    s = _spec(devices=["mig:all"], batch_sizes=[1, 8], concurrent=True)
    with pytest.raises(SpecError, match="'mig:all' but no MIG devices"):
        expand(s, [])
    groups = expand(s, ["MIG-a", "MIG-b", "MIG-c"])
    assert [[c["device"] for c in g] for g in groups] == [["MIG-a", "MIG-b", "MIG-c"]] * 2
    assert groups[0][0]["concurrent_devices"] == ["MIG-a", "MIG-b", "MIG-c"]
    one = _spec(devices=["mig:1"])
    assert [c["device"] for g in expand(one, ["MIG-a", "MIG-b"]) for c in g] == ["MIG-b"]
    with pytest.raises(SpecError, match="'mig:1' but only 1 MIG device"):
        expand(one, ["MIG-a"])


@pytest.mark.parametrize("exp,msg", [
    ({"workloads": ["resnet1000"]}, r"experiments\[0\].workloads\[0\]: unknown model 'resnet1000'"),
    ({"batch_sizes": [0]}, r"experiments\[0\].batch_sizes\[0\] must be a positive integer"),
    ({"modes": ["serve"]}, r"experiments\[0\].modes\[0\] must be 'train', 'inference'"),
    ({"modes": [{"open_loop": {"rates": []}}]}, "open_loop.rates must be a non-empty list"),
    ({"modes": [{"open_loop": {"rates": [1], "qps": 3}}]}, r"unknown keys \['qps'\]"),
    ({"devices": ["cpu:a"]}, r"experiments\[0\].devices\[0\]"),
    ({"stop": {"min_iters": 0}}, r"experiments\[0\].stop: stop rule needs"),
    ({"stop": {"p99": 1}}, r"experiments\[0\].stop: unknown keys \['p99'\]"),
    ({"amp": "yes"}, r"experiments\[0\].amp = 'yes' has the wrong type"),
    ({"input": "gpu"}, r"experiments\[0\].input = 'gpu'; choose one of"),
    ({"modes": [{"open_loop": {"rates": [1], "server": {"batch": 2}}}]}, r"open_loop.server: unknown keys"),
    ({"batchsize": [1]}, r"unknown keys \['batchsize'\]"),
    ({"seq_lens": [1024]}, r"seq_lens\[0\] must be an integer in 1..512"),
])
def test_bad_specs_name_file_and_field(exp, msg):
    with pytest.raises(SpecError, match="s.yaml: (.*)?" + msg):
        _spec(**exp)


def test_load_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "none.yaml")
    p = tmp_path / "bad.yaml"
    p.write_text("experiments: [\n")
    with pytest.raises(SpecError, match="bad.yaml: invalid YAML"):
        load_spec(p)


def test_shipped_configs_validate_and_state_only_deltas():
    from pathlib import Path

    import yaml
    for p in sorted((Path(__file__).parents[1] / "configs").glob("*.yaml")):
        s = load_spec(p)
        assert expand(s, ["MIG-x"]), p
        raw = yaml.safe_load(p.read_text())
        parent = load_spec(p.parent / raw["base"])["defaults"] if "base" in raw else load_spec(p)["defaults"]
        if "base" not in raw:
            from migperf.config import CELL_DEFAULTS as parent
        for k, v in (raw.get("defaults") or {}).items():      # nothing restated from what it overrides
            d = parent[k]
            assert (v != d) if not isinstance(d, dict) else all(v[kk] != d[kk] for kk in v), (p, k)


def test_load_spec_set_overrides_and_unknown_keys(tmp_path):
    from pathlib import Path
    syn = Path(__file__).parents[1] / "configs" / "synthetic.yaml"
    s = load_spec(syn, ["defaults.stop.max_time_s=1.5"])
    assert s["defaults"]["stop"]["max_time_s"] == 1.5 and s["name"] == "synthetic"
    bad = tmp_path / "bad.yaml"
    bad.write_text("defaults: {warmup: 3}\nexperiments: []\n")
    with pytest.raises(SpecError, match="bad.yaml: unknown config key 'defaults.warmup'"):
        load_spec(bad)


def test_cpu_devices_and_env():
    assert parse_cpu_device("cpu") is None and parse_cpu_device("cpu:0-2,5") == [0, 1, 2, 5]
    base = {"PATH": "/bin"}
    assert cell_env({"device": "cpu:0"}, base)["CUDA_VISIBLE_DEVICES"] == ""
    assert cell_env({"device": "MIG-abc"}, base)["CUDA_VISIBLE_DEVICES"] == "MIG-abc"
    e = cell_env({"device": "cuda:2"}, base)
    assert e["CUDA_VISIBLE_DEVICES"] == "2" and e["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"


def test_resume_skips_completed_groups(tmp_path):
    import json

    from migperf.runner import pending_groups
    s = _spec(devices=["cpu:0", "cpu:1"], batch_sizes=[1, 2, 4], concurrent=True)
    groups = expand(s)
    out = tmp_path / "results.jsonl"
    assert pending_groups(groups, out) == groups
    recs = [{"spec": c, "status": "ok"} for c in groups[0]]
    recs += [{"spec": groups[1][0], "status": "ok"}, {"spec": groups[1][1], "status": "failed"}]
    changed = dict(groups[2][0], batch_size=99)  # a record from a different spec does not count
    recs += [{"spec": changed, "status": "ok"}, {"spec": groups[2][1], "status": "ok"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert pending_groups(groups, out) == groups[1:]
