"""The Debian packages are listed once, in ``scripts/debian-packages.txt``, and every other place
that names them agrees with it.

The list has a section per purpose: ``[box]`` (what the box runs on), ``[box-build]`` (what
the box builds its native receiver with, where it has them), ``[test]`` (what the tests and
the docs build need: every box package and the real peers and tools) and ``[image]`` (what
builds and boots the appliance image, whose own package list holds every box package).
``.ci/run``, README.md and docs/development/testing.md read ``[test]`` through
``scripts/debian-packages.sh``, so they hold no copy; the technician's install page names the
box's packages, and every ``apt-get install`` written anywhere (README.md, docs/, .ci/run,
scripts/install.sh, the Makefile, the tests' hints) names only packages of the list —
install.sh's only the box's.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LIST = REPO / "scripts" / "debian-packages.txt"
PRINTER = REPO / "scripts" / "debian-packages.sh"


def sections(text: str) -> dict[str, list[str]]:
    """The list's sections: name -> its packages, in order (comments and blank lines aside)."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if match := re.fullmatch(r"\[([a-z-]+)\]", line.strip()):
            current = found.setdefault(match[1], [])
        elif re.match(r"[a-z0-9]", line):
            assert current is not None, line
            current.append(line.split()[0])
    return found


def apt_names(text: str) -> list[list[str]]:
    """The packages each ``apt-get install`` of ``text`` names, one list a command (options,
    ``$(...)`` substitutions and what follows ``||``, ``&&``, a comma, a quote, a backtick or
    a ``)`` left out)."""
    text = text.replace("\\\n", " ")
    commands = []
    for match in re.finditer(r"apt-get install\b([^\n`]*)", text):
        rest = re.sub(r"\$\([^)]*\)", " ", match[1])
        rest = re.split(r"\|\||&&|[;,)|\"']", rest, maxsplit=1)[0]
        commands.append([word for word in rest.split()
                         if re.fullmatch(r"[a-z0-9][a-z0-9.+-]+", word)])
    return commands


def _list() -> dict[str, list[str]]:
    return sections(LIST.read_text(encoding="utf-8"))


def test_the_list_has_its_sections_and_the_tests_cover_the_box():
    found = _list()
    assert set(found) == {"box", "box-build", "test", "image"}
    for name, packages in found.items():
        assert packages and len(packages) == len(set(packages)), name
    assert set(found["box"]) | set(found["box-build"]) <= set(found["test"])
    # the OCR of the export (box and tests) and graphviz's dot for the docs build
    assert {"tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-chi-sim"} <= set(found["box"])
    assert {"tesseract-ocr", "tesseract-ocr-chi-sim", "graphviz"} <= set(found["test"])


def test_the_appliance_image_installs_every_package_of_the_box():
    found = _list()
    for spec in sorted((REPO / "image").glob("*.vmdb")):
        text = spec.read_text(encoding="utf-8")
        listed = set(re.findall(r"^      - ([a-z0-9][a-z0-9.+-]+)\s*$", text, re.M))
        # systemd comes as systemd-sysv
        assert set(found["box"]) - {"systemd", "coreutils"} <= listed, spec.name
        assert {"systemd-sysv", *found["box-build"]} <= listed, spec.name


def test_the_printer_prints_each_section_as_the_list_has_it():
    for name, packages in _list().items():
        printed = subprocess.run([str(PRINTER), name], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split("\n")
        assert printed == [*packages, ""], name
    wrong = subprocess.run([str(PRINTER), "nope"], capture_output=True, text=True, timeout=30)
    assert wrong.returncode == 2 and wrong.stdout == "" and "[nope]" in wrong.stderr


def test_ci_and_the_test_pages_read_the_list_and_hold_no_copy():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "$(scripts/debian-packages.sh test)" in ci and "packages=(" not in ci
    for page in (REPO / "README.md", REPO / "docs" / "development" / "testing.md"):
        text = page.read_text(encoding="utf-8")
        assert ("apt-get install --no-install-recommends $(scripts/debian-packages.sh test)"
                in text), page
        assert apt_names(text) == [[]], page


def test_the_install_page_names_every_package_of_the_box():
    found = _list()
    for page in ("install.md", "install.zh.md"):
        text = (REPO / "docs" / "technician" / page).read_text(encoding="utf-8")
        spans = set(re.findall(r"`([^`\n]+)`", text))
        assert set(found["box"]) | set(found["box-build"]) <= spans, page


def test_every_apt_get_install_names_only_listed_packages():
    found = _list()
    everything = {package for packages in found.values() for package in packages}
    box = set(found["box"]) | set(found["box-build"])
    places = [REPO / "README.md", REPO / "Makefile", REPO / ".ci" / "run",
              REPO / "scripts" / "install.sh", *sorted((REPO / "docs").rglob("*.md")),
              *sorted((REPO / "tests").rglob("*.py"))]
    named = {}
    for place in places:
        for names in apt_names(place.read_text(encoding="utf-8")):
            named.setdefault(place.relative_to(REPO).as_posix(), set()).update(names)
    assert named["scripts/install.sh"] == {"systemd", "coreutils", "python3", "python3-venv",
                                           "fonts-noto-cjk"}
    assert named["scripts/install.sh"] <= box
    assert {place: names - everything for place, names in named.items()
            if names - everything} == {}


def test_the_checks_read_commands_as_a_shell_would():
    text = ("run `apt-get install --no-install-recommends dcmtk\\\n    orthanc` now\n"
            "    apt-get install -y -q --no-install-recommends \\\n"
            "        fonts-noto-cjk || say \"apt-get could not\"\n"
            "die \"no python3 (Debian: apt-get install python3 python3-venv)\"\n"
            "say \"(Debian: apt-get install fonts-noto-cjk, or install.sh --install-fonts)\"\n"
            "assert \"(apt-get install fonts-noto-cjk\" in text\n"
            "apt-get install -y $(scripts/debian-packages.sh test) && make test\n")
    assert apt_names(text) == [["dcmtk", "orthanc"], ["fonts-noto-cjk"],
                               ["python3", "python3-venv"], ["fonts-noto-cjk"],
                               ["fonts-noto-cjk"], []]
    assert sections("# note\n[box]\npython3   # why\n\n[test]\ng++\n") == {
        "box": ["python3"], "test": ["g++"]}
