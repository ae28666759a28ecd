"""The cookbook page (docs/model-makers/cookbook.md) says what its examples hold and run.

Each example's ``convert.toml`` is on the page byte for byte, the page's convert command is
the one ``tests/conversion/test_cookbook.py`` runs for it, and every line of code the page
quotes from an example is in that example's files.
"""

from __future__ import annotations

import re

import pytest

from clinibox_common.bundled import REPO_ROOT

PAGE = REPO_ROOT / "docs" / "model-makers" / "cookbook.md"
EXAMPLES = REPO_ROOT / "examples" / "model-makers"
FAMILIES = {"torchvision-ssd": "A torchvision detector", "yolo": "A YOLO-style detector",
            "lraspp": "A segmenter with a background channel",
            "timm-classifier": "A timm classifier"}


def _section(family: str) -> str:
    """The page's section of ``family``: from its heading to the next one."""
    text = PAGE.read_text(encoding="utf-8")
    start = text.index(f"## {FAMILIES[family]}")
    end = text.find("\n## ", start + 3)
    return text[start:end if end > 0 else None]


def _code(line: str) -> str:
    """A line of Python without its indentation and its trailing comment."""
    return re.split(r"\s{2,}#", line)[0].strip()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_page_holds_the_example_s_convert_toml_and_its_command(family):
    section = _section(family)
    toml = (EXAMPLES / family / "convert.toml").read_text(encoding="utf-8")
    assert f"```toml\n{toml}```" in section
    name = re.search(r'^name = "([^"]+)"$', toml, re.M).group(1)
    assert (f"clinibox convert --config convert.toml --key ~/clinibox-keys/maker.pem "
            f"--out packages/{name}/1.0.0") in section
    assert "python train.py" in section and f"`examples/model-makers/{family}/`" in section


@pytest.mark.parametrize("family", FAMILIES)
def test_every_line_of_code_the_page_quotes_is_in_the_example(family):
    source = {_code(line) for path in (EXAMPLES / family).glob("*.py")
              for line in path.read_text(encoding="utf-8").splitlines()}
    blocks = re.findall(r"```python\n(.*?)```", _section(family), re.S)
    assert blocks
    for block in blocks:
        for line in block.splitlines():
            code = _code(line)
            if code and code != "...":
                assert code in source, (family, code)
