"""A fake ``nvidia-smi`` for the apply/reset tests: a Python script that keeps MIG state in the
JSON file named by ``$FAKE_SMI_STATE`` and appends each argv (as a JSON list) to
``$FAKE_SMI_STATE.log``. It supports the commands migperf issues: ``--query-gpu=...``, ``-L``,
``mig -i N -lgi``, ``mig -i N -cgi ID:START,... -C``, ``mig -i N -dci`` and ``mig -i N -dgi``,
printing text in the formats of ``fixtures/``."""

import json
import os
import sys

from migperf.profiles import GPUS

SCRIPT = """#!{python}
import sys
sys.path[:0] = {path!r}
from migperf.tests.fake_smi import main
sys.exit(main(sys.argv[1:]))
"""


def write_script(path, python, syspath):
    path.write_text(SCRIPT.format(python=python, path=syspath))
    path.chmod(0o755)
    return path


def main(argv):
    st_path = os.environ["FAKE_SMI_STATE"]
    with open(st_path + ".log", "a") as f:
        f.write(json.dumps(argv) + "\n")
    st = json.load(open(st_path))
    gpu = GPUS["A100-80GB"]
    if argv and argv[0].startswith("--query-gpu="):
        for i, g in enumerate(st["gpus"]):
            m = "Enabled" if g["mig"] else "Disabled"
            print(f"{i}, {g['name']}, {m}, {m}")
        return 0
    if argv == ["-L"]:
        for i, g in enumerate(st["gpus"]):
            print(f"GPU {i}: {g['name']} (UUID: GPU-00000000-0000-4000-8000-00000000000{i})")
            for k, gi in enumerate(g["gis"]):
                print(f"  MIG {gi['name']:<12}Device {k:>2}: (UUID: MIG-11111111-2222-5333-8444-{i:04d}{gi['id']:08d})")
        return 0
    if argv[:2] == ["mig", "-i"]:
        i = int(argv[2])
        g = st["gpus"][i]
        op = argv[3]
        if op == "-lgi":
            if not g["gis"]:
                print("No GPU instances found: Not Found")
                return 6
            print("| GPU instances:                                        |")
            print("|=======================================================|")
            for gi in g["gis"]:
                print(f"|   {i}  MIG {gi['name']:<14}{gi['pid']:>3}{gi['id']:>9}{gi['start']:>11}:{gi['size']}     |")
            return 0
        if op == "-cgi":
            for item in argv[4].split(","):
                pid, start = (int(x) for x in item.split(":"))
                p = next(p for p in gpu.profiles if p.id == pid)
                gid = max([0] + [x["id"] for x in g["gis"]]) + 1
                g["gis"].append({"name": p.name, "pid": pid, "id": gid, "start": start, "size": p.size})
                print(f"Successfully created GPU instance ID {gid:>2} on GPU {i:>2} using profile MIG {p.name} (ID {pid:>2})")
                print(f"Successfully created compute instance ID  0 on GPU {i:>2} GPU instance ID {gid:>2} using profile "
                      f"MIG {p.name} (ID  0)")
        elif op == "-dci":
            for gi in g["gis"]:
                print(f"Successfully destroyed compute instance ID  0 from GPU {i:>2} GPU instance ID {gi['id']:>2}")
        elif op == "-dgi":
            for gi in g["gis"]:
                print(f"Successfully destroyed GPU instance ID {gi['id']:>2} from GPU {i:>2}")
            g["gis"] = []
        json.dump(st, open(st_path, "w"))
        return 0
    print(f"fake nvidia-smi: unsupported arguments {argv}", file=sys.stderr)
    return 2
