"""MIG GPU-instance profile tables and the layout planner behind ``migperf plan``.

A MIG-capable GPU has ``compute_slices`` compute slices (7 on A100/H100/H200, 4 on A30) and
``memory_slices`` memory slices (8 on A100/H100/H200, 4 on A30). Each GPU-instance profile
takes a number of compute slices and occupies ``size`` consecutive memory slices starting at one
of its allowed ``starts`` (what ``nvidia-smi mig -lgipp`` prints as ``{0,2,4}:2``). A layout is
valid when its compute slices sum to at most the GPU's, no profile exceeds its instance count,
and every instance gets a placement with no memory-slice overlap. :func:`plan_layout` finds such
placements by backtracking (largest first) and :func:`plan_commands` turns them into the exact
``nvidia-smi mig`` argument lists.

Profile IDs, counts and placements follow NVIDIA's MIG user guide (``-lgip`` / ``-lgipp``
tables) and the public ``-lgip`` captures listed in ``captures/README.md``; each board says its
source, and values no capture shows are marked ``confirmed=False`` (``RECONSTRUCTED`` below).
"""

from __future__ import annotations

from dataclasses import dataclass, field


class LayoutError(ValueError):
    """An invalid MIG layout; the message says which rule it breaks."""


@dataclass(frozen=True)
class Profile:
    name: str            # e.g. "1g.10gb"
    id: int              # GPU-instance profile ID (nvidia-smi mig -lgip "ID")
    compute: int         # compute slices (the "Ng")
    size: int            # memory slices occupied
    starts: tuple[int, ...]  # allowed first memory slice
    max_count: int       # "Instances Total" in -lgip
    memory_gib: float    # usable memory as -lgip reports it
    sms: int | None      # SMs as -lgip reports them (None: not known for this board)
    confirmed: bool = True  # False: memory/SMs not seen in a capture (see GpuModel.source)


@dataclass(frozen=True)
class GpuModel:
    name: str
    compute_slices: int
    memory_slices: int
    profiles: tuple[Profile, ...] = field(default_factory=tuple)
    aliases: tuple[str, ...] = ()
    source: str = ""     # where the table comes from (a capture, the MIG user guide, or RECONSTRUCTED)

    def profile(self, key: str) -> Profile:
        for p in self.profiles:
            if key == p.name or key == str(p.id) or key == f"MIG {p.name}":
                return p
        raise LayoutError(f"{self.name} has no MIG profile {key!r}; valid: "
                          + ", ".join(f"{p.name} (ID {p.id})" for p in self.profiles))

    @property
    def reconstructed(self) -> bool:
        return not all(p.confirmed for p in self.profiles)


# NVML profile IDs and placements shared by every 7-compute/8-memory-slice board (A100, H100,
# H200, GH200, H20): 1g, 1g+me, 1g with two memory slices, 2g, 3g, 4g, 7g. IDs 19/20/15/14/9/5/0
# appear in every capture listed in captures/README.md; starts follow `nvidia-smi mig -lgipp`.
_SEVEN = ((19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7), (20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
          (15, 1, 2, (0, 2, 4, 6), 4), (14, 2, 2, (0, 2, 4), 3), (9, 3, 4, (0, 4), 2), (5, 4, 4, (0,), 1),
          (0, 7, 8, (0,), 1))
A100_SMS = (14, 14, 14, 28, 42, 56, 98)
HOPPER_SMS = (16, 16, 26, 32, 60, 64, 132)   # H100 NVL, H200 and GH200-144G -lgip captures agree


def _seven_slice(name: str, mem: tuple[str, str, str, str], gib: tuple[float, float, float, float, float],
                 sms, aliases=(), source="", unconfirmed=()) -> GpuModel:
    """A 7-compute/8-memory-slice board. ``mem``: profile memory names for 1/2/4/8 memory slices
    (e.g. 10/20/40/80); ``gib``: -lgip memory for 1, 2, 4 memory slices and 7g, and 1g+me (same as
    1g); ``unconfirmed``: profile names whose memory/SMs no capture shows."""
    m1, m2, m4, m8 = mem
    g1, g2, g4, g8 = gib[:4]
    names = (f"1g.{m1}gb", f"1g.{m1}gb+me", f"1g.{m2}gb", f"2g.{m2}gb", f"3g.{m4}gb", f"4g.{m4}gb", f"7g.{m8}gb")
    mems = (g1, g1, g2, g2, g4, g4, g8)
    return GpuModel(name, 7, 8, tuple(
        Profile(n, pid, c, sz, st, cnt, g, s, n not in unconfirmed)
        for n, (pid, c, sz, st, cnt), g, s in zip(names, _SEVEN, mems, sms)), tuple(aliases), source)


GPUS: dict[str, GpuModel] = {
    "A100-40GB": _seven_slice(
        "A100-40GB", ("5", "10", "20", "40"), (4.75, 9.75, 19.62, 39.38), A100_SMS,
        ("A100-SXM4-40GB", "A100-PCIE-40GB"), "NVIDIA MIG user guide, A100-SXM4-40GB -lgip example"),
    "A100-80GB": _seven_slice(
        "A100-80GB", ("10", "20", "40", "80"), (9.75, 19.62, 39.50, 79.25), A100_SMS,
        # A100-SXM-80GB: the NVML product name on DGX A100 80GB systems
        ("A100-SXM4-80GB", "A100-SXM-80GB", "A100 80GB PCIe", "A100-PCIE-80GB"),
        "NVIDIA MIG user guide (A100 profile table and -lgip/-lgipp format); captures/a100_80gb_lgip.txt"),
    # DEVIATION: memory GiB of H100-80GB profiles is taken equal to the A100-80GB's (no -lgip
    # capture of an H100-80GB was available); IDs, placements and SMs are the Hopper captures'.
    "H100-80GB": _seven_slice(
        "H100-80GB", ("10", "20", "40", "80"), (9.75, 19.62, 39.50, 79.25), HOPPER_SMS,
        ("H100 80GB HBM3", "H100-SXM5-80GB", "H100 PCIe", "H100-PCIE-80GB"),
        "RECONSTRUCTED memory (A100-80GB values); SMs/IDs from the Hopper captures in captures/README.md",
        unconfirmed=("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")),
    "H100-NVL-94GB": _seven_slice(
        # RECONSTRUCTED: 3g/4g/7g SMs follow the other Hopper captures; 3g/4g memory 46.38 GiB is
        # quoted in NVIDIA/mig-parted#101; the 7g.94gb memory (93.0) is a guess (no capture).
        "H100-NVL-94GB", ("12", "24", "47", "94"), (10.75, 21.62, 46.38, 93.0), HOPPER_SMS,
        ("H100 NVL", "H100-NVL", "H100 94GB", "H100-PCIE-94GB", "H100-SXM5-94GB"),
        "capture: NVIDIA/gpu-operator#900 (-lgip, 1g/1g+me/1g.24gb/2g rows) + mig-parted#101; "
        "3g/4g/7g SMs and 7g memory RECONSTRUCTED", unconfirmed=("3g.47gb", "4g.47gb", "7g.94gb")),
    # RECONSTRUCTED: GH200's 96 GB H100 (H100-96GB, "GH200 480GB" systems): profile names from
    # NVIDIA/mig-parted@bd7160f deployments/systemd/config-default.yaml (device 0x2342/0x233D);
    # SMs by the Hopper pattern and memory scaled from the H100 NVL capture (no -lgip capture).
    "GH200-96GB": _seven_slice(
        "GH200-96GB", ("12", "24", "48", "96"), (11.0, 22.12, 47.0, 94.5), HOPPER_SMS,
        ("GH200 480GB", "GH200", "H100-96GB", "H100 96GB", "GH200-96GB"),
        "RECONSTRUCTED from NVIDIA/mig-parted@bd7160f config-default.yaml profile names",
        unconfirmed=("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")),
    # RECONSTRUCTED: H20 (96 GB) profile names from NVIDIA/mig-parted@bd7160f config-default.yaml
    # (device 0x2329, grouped with H100-96GB); memory as GH200-96GB; SMs unknown (the H20 has fewer
    # SMs than an H100 and no capture was available), shown as "?".
    "H20": _seven_slice(
        "H20", ("12", "24", "48", "96"), (11.0, 22.12, 47.0, 94.5), (None,) * 7,
        ("H20", "H20-96GB"),
        "RECONSTRUCTED from NVIDIA/mig-parted@bd7160f config-default.yaml profile names; SMs unknown",
        unconfirmed=("1g.12gb", "1g.12gb+me", "1g.24gb", "2g.24gb", "3g.48gb", "4g.48gb", "7g.96gb")),
    "H200": _seven_slice(
        "H200", ("18", "35", "71", "141"), (16.00, 32.25, 69.50, 139.75), HOPPER_SMS,
        ("H200", "H200 NVL", "H200-141GB", "H200-SXM5-141GB"),
        "capture: NVIDIA/mig-parted#120 (-lgip on an H200, driver R550); captures/h200_lgip.txt"),
    "A30": GpuModel("A30", 4, 4, (
        Profile("1g.6gb", 14, 1, 1, (0, 1, 2, 3), 4, 5.81, 14),
        Profile("1g.6gb+me", 21, 1, 1, (0, 1, 2, 3), 1, 5.81, 14),
        Profile("2g.12gb", 5, 2, 2, (0, 2), 2, 11.69, 28),
        Profile("2g.12gb+me", 6, 2, 2, (0, 2), 1, 11.69, 28),
        Profile("4g.24gb", 0, 4, 4, (0,), 1, 23.44, 56),
    ), ("A30-24GB",), "NVIDIA MIG user guide, A30 profile table; captures/a30_lgip.txt"),
}


def gpu_model(name: str) -> GpuModel:
    """Look a GPU up by our key (``A100-80GB``) or by an NVML/nvidia-smi product name
    (``NVIDIA A100-SXM4-80GB``)."""
    key = name.replace("NVIDIA ", "").strip().upper()
    for g in GPUS.values():
        if key == g.name.upper() or key in (a.upper() for a in g.aliases):
            return g
    raise LayoutError(f"unknown GPU {name!r}; known: {', '.join(GPUS)}")


@dataclass(frozen=True)
class Placement:
    profile: Profile
    start: int

    @property
    def slots(self) -> range:
        return range(self.start, self.start + self.profile.size)


def parse_layout(gpu: GpuModel, layout: str | list[str]) -> list[Profile]:
    items = [s.strip() for s in (layout.split(",") if isinstance(layout, str) else layout) if s.strip()]
    if not items:
        raise LayoutError("empty layout: give profiles such as 3g.40gb,2g.20gb")
    return [gpu.profile(s) for s in items]


def plan_layout(gpu: GpuModel, layout: str | list[str]) -> list[Placement]:
    """Placements for every profile of ``layout`` (in the order given), or :class:`LayoutError`."""
    profs = parse_layout(gpu, layout)
    for p in {p.name: p for p in profs}.values():
        n = sum(q.name == p.name for q in profs)
        if n > p.max_count:
            raise LayoutError(f"{n} × {p.name} requested; {gpu.name} allows at most {p.max_count}")
    # +me profiles share the GPU's single set of media engines
    n_me = sum(p.name.endswith("+me") for p in profs)
    if n_me > 1:
        raise LayoutError(f"{n_me} '+me' profiles requested; the media engines go to at most one instance")

    used = sum(p.compute for p in profs)
    if used > gpu.compute_slices:
        raise LayoutError(f"layout needs {used} compute slices; {gpu.name} has {gpu.compute_slices} "
                          f"({' + '.join(f'{p.name}={p.compute}' for p in profs)})")
    mem = sum(p.size for p in profs)
    if mem > gpu.memory_slices:
        raise LayoutError(f"layout needs {mem} memory slices; {gpu.name} has {gpu.memory_slices} "
                          f"({' + '.join(f'{p.name}={p.size}' for p in profs)})")
    order = sorted(range(len(profs)), key=lambda i: (-profs[i].size, -profs[i].compute, i))
    taken = [False] * gpu.memory_slices
    chosen: dict[int, int] = {}

    def place(k: int) -> bool:
        if k == len(order):
            return True
        i = order[k]
        p = profs[i]
        for s in p.starts:
            if s + p.size <= gpu.memory_slices and not any(taken[s:s + p.size]):
                for j in range(s, s + p.size):
                    taken[j] = True
                chosen[i] = s
                if place(k + 1):
                    return True
                for j in range(s, s + p.size):
                    taken[j] = False
                del chosen[i]
        return False

    if not place(0):
        raise LayoutError(
            f"no placement fits {','.join(p.name for p in profs)} on {gpu.name}: allowed starts are "
            + "; ".join(f"{p.name} {{{','.join(map(str, p.starts))}}}:{p.size}" for p in {q.name: q for q in profs}.values())
            + f" over {gpu.memory_slices} memory slices")
    return [Placement(profs[i], chosen[i]) for i in range(len(profs))]


def plan_commands(placements: list[Placement], gpu_index: int = 0) -> list[list[str]]:
    """The ``nvidia-smi`` argument lists that create the layout: one ``-cgi`` with explicit
    ``<profile ID>:<start>`` placements and ``-C`` (a default compute instance in each GI)."""
    spec = ",".join(f"{pl.profile.id}:{pl.start}" for pl in placements)
    return [["nvidia-smi", "mig", "-i", str(gpu_index), "-cgi", spec, "-C"]]


def reset_commands(gpu_index: int = 0) -> list[list[str]]:
    """Destroy every compute instance, then every GPU instance, on one GPU."""
    return [["nvidia-smi", "mig", "-i", str(gpu_index), "-dci"],
            ["nvidia-smi", "mig", "-i", str(gpu_index), "-dgi"]]


def render_plan(gpu: GpuModel, placements: list[Placement], gpu_index: int = 0) -> str:
    lines = [f"GPU {gpu_index}: {gpu.name} ({gpu.compute_slices} compute / {gpu.memory_slices} memory slices)",
             "", "| # | profile | ID | compute slices | memory slices (start:size) | memory GiB |",
             "|---|---|---|---|---|---|"]
    for k, pl in enumerate(placements):
        p = pl.profile
        lines.append(f"| {k} | {p.name} | {p.id} | {p.compute} | {pl.start}:{p.size} | {p.memory_gib:g}"
                     f"{'' if p.confirmed else ' (reconstructed)'} |")
    used = sum(pl.profile.compute for pl in placements)
    row = ["."] * gpu.memory_slices
    for k, pl in enumerate(placements):
        for j in pl.slots:
            row[j] = str(k)
    lines += ["", f"compute slices used: {used}/{gpu.compute_slices}; memory map: [{' '.join(row)}]", "",
              "commands (run as root; MIG mode must already be enabled):"]
    lines += ["  " + " ".join(c) for c in plan_commands(placements, gpu_index)]
    return "\n".join(lines)
