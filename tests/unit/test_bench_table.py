"""The benchmarks' records as data: the table the documentation publishes, and the CPU slug
the records are filed under (bench/table.py, bench/common.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench.common import cpu_slug

TABLE = Path(__file__).resolve().parents[2] / "bench" / "table.py"
ZEN4 = "amd-epyc-zen4-avx512-vnni-bf16"
XEON = "intel-xeon-sapphirerapids-avx512-vnni-bf16-amx"


def load_table():
    """bench/table.py loaded by its path, as the documentation build loads it."""
    spec = importlib.util.spec_from_file_location("bench_table_by_path", TABLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(when: str, commit: str, rate: float, ratio: float) -> dict:
    """A synthetic ingest record as bench.common.save writes it."""
    reference = "orthanc (default, SyncStorageArea=true), same run"
    return {"script": "ingest", "measured_at": when, "commit": commit,
            "machine": {"cores": 2}, "notes": "",
            "figures": {"clinibox, native receiver": {"value": rate, "unit": "instances/s",
                                                      "reference": reference},
                        "clinibox ÷ orthanc default": {"value": ratio, "unit": "×",
                                                       "reference": reference},
                        "files": 200}}


def write(folder: Path, name: str, content: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(content), encoding="utf-8")


def test_the_table_holds_each_cpus_newest_figures(tmp_path):
    results = tmp_path / "results"
    write(results / ZEN4, "ingest.json", record("2026-11-24T10:00:00+00:00", "abc1234",
                                                 203.5, 1.72))
    write(results / XEON, "ingest.json", [  # a file may keep its history: the newest counts
        record("2026-11-20T10:00:00+00:00", "0ld0ld0", 99.9, 0.5),
        record("2026-11-23T10:00:00+00:00", "def5678+dirty", 251.25, 2.07)])

    table = load_table().render(results)

    lines = table.splitlines()
    assert lines[0] == (f"| Benchmark | Figure | Unit | Reference (same run) | {ZEN4} | {XEON} |")
    row = next(line for line in lines if "clinibox, native receiver" in line)
    assert row.endswith("| 203.5 | 251.25 |")
    assert "instances/s" in row and "orthanc (default, SyncStorageArea=true), same run" in row
    assert next(line for line in lines if "÷ orthanc" in line).endswith("| 1.72 | 2.07 |")
    assert next(line for line in lines if "| files |" in line).endswith("| 200 | 200 |")
    assert "2026-11-24 (abc1234)" in table and "2026-11-23 (def5678+dirty)" in table
    assert "99.9" not in table and "0ld0ld0" not in table
    assert len([line for line in lines if line.startswith("|")]) == len(lines)  # one table


def test_a_figure_one_cpu_lacks_is_a_dash_and_an_empty_folder_no_table(tmp_path):
    results = tmp_path / "results"
    lone = record("2026-11-24T10:00:00+00:00", "abc1234", 203.5, 1.72)
    lone["figures"]["worker on"] = {"value": None, "unit": "instances/s"}
    write(results / ZEN4, "ingest.json", lone)
    write(results / XEON, "ingest.json", record("2026-11-23T10:00:00+00:00", "d", 1.0, 2.0))
    table = load_table().render(results)
    assert next(line for line in table.splitlines() if "worker on" in line).endswith("| — | — |")
    assert load_table().render(tmp_path / "nothing") == ""


def test_cpu_slugs_name_the_micro_architecture_and_the_kernel_features():
    zen4 = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
            "flags\t\t: sse4_2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    zen3 = ("vendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
            "model name\t: AMD EPYC 7B13 64-Core Processor\nflags\t\t: sse4_2 avx2 fma\n")
    xeon = ("vendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 143\nstepping\t: 8\n"
            "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
            "flags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_int8 amx_bf16\n")
    arm = ("processor\t: 0\nFeatures\t: fp asimd asimddp\nCPU implementer\t: 0x41\n"
           "CPU part\t: 0xd0c\n")
    assert cpu_slug(zen4) == ZEN4
    assert cpu_slug(zen3) == "amd-epyc-zen3-avx2"
    assert cpu_slug(xeon) == XEON
    assert cpu_slug(arm) == "arm-neoverse-n1-asimd-dotprod"
