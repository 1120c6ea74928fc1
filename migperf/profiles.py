"""MIG GPU-instance profile tables and the layout planner behind ``migperf plan``.

A MIG-capable GPU has ``compute_slices`` compute slices (7 on A100/H100/H200, 4 on A30) and
``memory_slices`` memory slices (8 on A100/H100/H200, 4 on A30). Each GPU-instance profile
takes a number of compute slices and occupies ``size`` consecutive memory slices starting at one
of its allowed ``starts`` (what ``nvidia-smi mig -lgipp`` prints as ``{0,2,4}:2``). A layout is
valid when its compute slices sum to at most the GPU's, no profile exceeds its instance count,
and every instance gets a placement with no memory-slice overlap. :func:`plan_layout` finds such
placements by backtracking (largest first) and :func:`plan_commands` turns them into the exact
``nvidia-smi mig`` argument lists.

Profile IDs, counts and placements for A100-40GB/80GB and A30 follow NVIDIA's MIG user guide
(``-lgip`` / ``-lgipp`` tables). H100-80GB and H200 are marked RECONSTRUCTED below.
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
    memory_gib: float    # usable memory as -lgip reports it (approximate for RECONSTRUCTED GPUs)
    sms: int


@dataclass(frozen=True)
class GpuModel:
    name: str
    compute_slices: int
    memory_slices: int
    profiles: tuple[Profile, ...] = field(default_factory=tuple)
    aliases: tuple[str, ...] = ()

    def profile(self, key: str) -> Profile:
        for p in self.profiles:
            if key == p.name or key == str(p.id) or key == f"MIG {p.name}":
                return p
        raise LayoutError(f"{self.name} has no MIG profile {key!r}; valid: "
                          + ", ".join(f"{p.name} (ID {p.id})" for p in self.profiles))


def _a100_like(name, mem, aliases=(), mem_gib=None) -> GpuModel:
    """A100/H100/H200 family: 7 compute slices, 8 memory slices, identical placement rules."""
    m1, m2, m4, m8 = mem  # profile memory names for 1/2/4/8 memory slices, e.g. 10/20/40/80
    g1, g2, g4, g8 = mem_gib
    return GpuModel(name, 7, 8, (
        Profile(f"1g.{m1}gb", 19, 1, 1, (0, 1, 2, 3, 4, 5, 6), 7, g1, 14),
        Profile(f"1g.{m1}gb+me", 20, 1, 1, (0, 1, 2, 3, 4, 5, 6), 1, g1, 14),
        Profile(f"1g.{m2}gb", 15, 1, 2, (0, 2, 4, 6), 4, g2, 14),
        Profile(f"2g.{m2}gb", 14, 2, 2, (0, 2, 4), 3, g2, 28),
        Profile(f"3g.{m4}gb", 9, 3, 4, (0, 4), 2, g4, 42),
        Profile(f"4g.{m4}gb", 5, 4, 4, (0,), 1, g4, 56),
        Profile(f"7g.{m8}gb", 0, 7, 8, (0,), 1, g8, 98),
    ), aliases)


GPUS: dict[str, GpuModel] = {
    "A100-40GB": _a100_like("A100-40GB", (5, 10, 20, 40), ("A100-SXM4-40GB", "A100-PCIE-40GB"),
                            (4.75, 9.75, 19.62, 39.38)),
    "A100-80GB": _a100_like("A100-80GB", (10, 20, 40, 80), ("A100-SXM4-80GB", "A100 80GB PCIe"),
                            (9.75, 19.62, 39.50, 79.25)),
    # RECONSTRUCTED: H100 IDs/placements assumed equal to A100-80GB (research note marks them
    # [verify-on-device]); SM counts per slice differ on H100 (132 SMs) and are not known here.
    "H100-80GB": _a100_like("H100-80GB", (10, 20, 40, 80), ("H100 80GB HBM3", "H100-SXM5-80GB", "H100 PCIe"),
                            (9.75, 19.62, 39.50, 79.25)),
    # RECONSTRUCTED: H200 profile names from NVIDIA's MIG guide table; IDs/placements assumed
    # equal to A100/H100 (research note: [verify-on-device]).
    "H200": _a100_like("H200", (18, 35, 71, 141), ("H200", "H200 NVL", "H200-141GB"),
                       (16.75, 32.50, 65.50, 131.0)),
    "A30": GpuModel("A30", 4, 4, (
        Profile("1g.6gb", 14, 1, 1, (0, 1, 2, 3), 4, 5.81, 14),
        Profile("1g.6gb+me", 21, 1, 1, (0, 1, 2, 3), 1, 5.81, 14),
        Profile("2g.12gb", 5, 2, 2, (0, 2), 2, 11.69, 28),
        Profile("2g.12gb+me", 6, 2, 2, (0, 2), 1, 11.69, 28),
        Profile("4g.24gb", 0, 4, 4, (0,), 1, 23.44, 56),
    ), ("A30-24GB",)),
}


def gpu_model(name: str) -> GpuModel:
    """Look a GPU up by our key (``A100-80GB``) or by an NVML/nvidia-smi product name
    (``NVIDIA A100-SXM4-80GB``)."""
    key = name.replace("NVIDIA ", "").strip()
    for g in GPUS.values():
        if key.upper() == g.name.upper() or key in g.aliases:
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
        lines.append(f"| {k} | {p.name} | {p.id} | {p.compute} | {pl.start}:{p.size} | {p.memory_gib:g} |")
    used = sum(pl.profile.compute for pl in placements)
    row = ["."] * gpu.memory_slices
    for k, pl in enumerate(placements):
        for j in pl.slots:
            row[j] = str(k)
    lines += ["", f"compute slices used: {used}/{gpu.compute_slices}; memory map: [{' '.join(row)}]", "",
              "commands (run as root; MIG mode must already be enabled):"]
    lines += ["  " + " ".join(c) for c in plan_commands(placements, gpu_index)]
    return "\n".join(lines)
