"""What the local upstream index holds: the projects every workload uses.

- dependency sets: a root `<set>-app` that pulls in 39 `<set>-libNN` transitively (three
  levels, shared leaves), three versions each, real installable wheels; one set per cold
  install (a set no target has seen), so every cold install is really cold;
- `medium-project`: 10 versions x 5 wheel tags = 50 files;
- `huge-project`: 250 versions x 8 wheel tags = 2,000 files;
- `small-file`: one ~5 KB wheel; `large-file` and `large-cold`: one ~20 MB wheel each
  (`large-cold` is only ever asked for by the concurrent cold-request workload).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.dists import Dist, normalize, wheel

MEDIUM = "medium-project"
HUGE = "huge-project"
SMALL = "small-file"
LARGE = "large-file"
LARGE_COLD = "large-cold"

_VERSIONS = ("1.0.0", "1.1.0", "2.0.0")
_TAGS = (
    "py3-none-any",
    "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp311-cp311-musllinux_1_2_x86_64",
    "cp311-cp311-macosx_11_0_arm64",
    "cp311-cp311-win_amd64",
    "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
    "cp312-cp312-macosx_11_0_arm64",
    "cp312-cp312-win_amd64",
)


@dataclass
class Corpus:
    projects: dict[str, list[Dist]] = field(default_factory=dict)  # normalized name -> files
    dep_roots: dict[str, str] = field(default_factory=dict)  # set id -> root project
    dep_set_size: int = 0  # distributions one install of a set puts in the venv

    def add(self, dist: Dist) -> None:
        self.projects.setdefault(normalize(dist.project), []).append(dist)

    def file(self, project: str) -> Dist:
        """The only (or last) file of `project`."""
        return self.projects[project][-1]

    def file_count(self, project: str) -> int:
        return len(self.projects[project])


def _dependency_graph(prefix: str) -> dict[str, list[str]]:
    """Root -> 6 libs -> 4 libs each (24) -> 1-2 of 9 shared leaves: 40 projects."""
    lib = [f"{prefix}-lib{n:02d}" for n in range(1, 40)]
    level1, level2, level3 = lib[:6], lib[6:30], lib[30:]
    graph: dict[str, list[str]] = {f"{prefix}-app": level1}
    for i, name in enumerate(level1):
        graph[name] = level2[i * 4 : i * 4 + 4]
    for i, name in enumerate(level2):
        graph[name] = [level3[i % 9]] + ([level3[(i + 4) % 9]] if i % 3 == 0 else [])
    for name in level3:
        graph[name] = []
    return graph


def build(dep_sets: list[str], *, large_mb: int = 20) -> Corpus:
    corpus = Corpus()
    for prefix in dep_sets:
        graph = _dependency_graph(prefix)
        corpus.dep_roots[prefix] = f"{prefix}-app"
        corpus.dep_set_size = len(graph)
        for name, deps in graph.items():
            for version in _VERSIONS:
                corpus.add(wheel(name, version, [f"{dep}>=1.0,<3" for dep in deps]))
    for minor in range(10):
        for tag in _TAGS[:5]:
            corpus.add(wheel(MEDIUM, f"3.{minor}.0", tag=tag, requires_python=">=3.8"))
    for n in range(250):
        version = f"{n // 50}.{n // 5 % 10}.{n % 5}"
        for tag in _TAGS:
            corpus.add(wheel(HUGE, version, tag=tag, requires_python=">=3.8"))
    corpus.add(wheel(SMALL, "1.0.0", payload=4 * 1024))
    corpus.add(wheel(LARGE, "1.0.0", payload=large_mb * 1024 * 1024))
    corpus.add(wheel(LARGE_COLD, "1.0.0", payload=large_mb * 1024 * 1024, seed=1))
    return corpus
