"""Run the documentation's set-up pages as written: their ``sh`` blocks, in order, in one shell.

Sybil (a library for testing the examples in documentation) parses each Markdown page into its
fenced ``sh`` blocks and the page's directives; :class:`DocShell` runs each block in a bash that
lives in namespaces of its own (``unshare``), so the pages' commands run exactly as printed —
``/etc/mosquitto``, ``/etc/clinibox-central``, ``systemctl restart mosquitto`` — and leave this
machine as it was:

* mount: ``/etc``, ``/var/lib``, ``/var/log`` and ``/run`` are overlays whose writes land in a
  scratch folder (the test reads them there); ``/etc/hosts`` names the pages' host names
  (``mqtt.hospital.example``) as 127.0.0.1;
* network: a loopback of its own, so the pages' fixed ports (8883, 8443, 11112) collide with
  nothing else the suite runs;
* pid: every process the pages start ends with the shell.

systemd cannot run in such a namespace, so ``systemctl`` there is ``tests/docs_shims/systemctl``,
a stand-in that starts a unit's own ``ExecStartPre``/``ExecStart`` lines (a mock of systemd
only, said here and in the shim).

Directives in the pages (HTML comments, invisible on the site) say how to run a block where a
person would do something no command shows:

* ``<!-- skip: next -->`` (Sybil's own): the block is an illustration (a placeholder in it);
* ``<!-- docs-run: background -->``: the next block is a service a person leaves running in a
  terminal: it runs in the background, its output in ``logs/``;
* ``<!-- docs-run: stdin NAME -->``: the next block reads what a person would type or scan,
  the test's input NAME;
* ``<!-- docs-run: file PATH NAME -->``: before the next block, PATH holds the test's input
  NAME (a password file the page tells the reader to write);
* ``<!-- docs-run: hook NAME -->``: the test does NAME here (e.g. a technician provisions the
  box between two of the hospital's steps).
"""

from __future__ import annotations

import json
import queue
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

REPO = Path(__file__).resolve().parent.parent
SHIMS = Path(__file__).resolve().parent / "docs_shims"
#: the host names the pages use, all served on the namespace's loopback
HOSTS = ("mqtt.hospital.example", "console.hospital.example", "federation.hospital.example")
#: what the overlays cover
OVERLAID = ("/etc", "/var/lib", "/var/log", "/run", "/opt", "/usr/local", "/media")
_MARK = "__DOCS_RUN_DONE__"


class DocsRunError(AssertionError):
    """A block of a page failed: the page does not run as written."""


@dataclass
class DocShell:
    """One bash in namespaces of its own (the module's docstring), kept across pages."""

    scratch: Path
    inputs: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, Callable[[DocShell], None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = self.scratch / "home"
        self.logs = self.scratch / "logs"
        self.blocks = self.scratch / "blocks"
        for folder in (self.home, self.logs, self.blocks):
            folder.mkdir(parents=True, exist_ok=True)
        self._count = 0
        #: the pages' own sh blocks run so far (hooks' and the test's commands not counted)
        self.page_blocks = 0
        self._next: dict[str, Any] = {}
        env = {"PATH": f"{SHIMS}:{REPO / '.venv' / 'bin'}:/usr/local/sbin:/usr/local/bin:"
                       "/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": str(self.home), "LANG": "C.UTF-8", "TCP_NODELAY": "1",
               "DOCS_RUN": str(self.scratch), "PYTHONDONTWRITEBYTECODE": "1",
               "TERM": "dumb"}
        self._process = subprocess.Popen(
            # --kill-child: a shell killed after a block ran past its time takes everything
            # the pages started with it (the pid namespace ends with its first process)
            ["unshare", "--mount", "--net", "--pid", "--fork", "--kill-child", "--propagation",
             "private", "bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=self.home, env=env, bufsize=1)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        prelude = ["set +e", "ip link set lo up"]
        for where in OVERLAID:
            name = where.strip("/").replace("/", "-")
            upper, work = self.scratch / "overlay" / name, self.scratch / "overlay" / f"{name}.w"
            upper.mkdir(parents=True)
            work.mkdir(parents=True)
            prelude.append(f"mount -t overlay overlay -o lowerdir={where},upperdir={upper},"
                           f"workdir={work} {where}")
        prelude.append(f"printf '127.0.0.1 %s\\n' {' '.join(HOSTS)} >> /etc/hosts")
        prelude.append("mount -t proc proc /proc")
        self._send("\n".join(prelude), timeout=60, what="the namespaces' set-up")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _send(self, script: str, *, timeout: float, what: str) -> tuple[int, str]:
        """Run ``script`` in the shell itself (its cd and variables stay); (status, output)."""
        self._count += 1
        block = self.blocks / f"{self._count:03d}.sh"
        log = self.logs / f"{self._count:03d}.log"
        block.write_text(script + "\n", encoding="utf-8")
        stdin = self._next.pop("stdin", None)
        source = str(self.scratch / "inputs" / stdin) if stdin else "/dev/null"
        assert self._process.stdin is not None
        self._process.stdin.write(f"source {shlex.quote(str(block))} < {shlex.quote(source)}"
                                  f" > {shlex.quote(str(log))} 2>&1; echo \"{_MARK} $?\"\n")
        self._process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise DocsRunError(f"{what} ran past {timeout:g} s:\n{script}\n--- output:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}") from None
            if line == "":
                raise DocsRunError(f"the shell ended during {what}:\n{script}")
            if line.startswith(_MARK):
                return int(line.split()[1]), log.read_text(errors="replace")

    def input_file(self, name: str) -> Path:
        """Where the test's input ``name`` is written for a block to read."""
        folder = self.scratch / "inputs"
        folder.mkdir(exist_ok=True)
        path = folder / name
        path.write_text(self.inputs[name], encoding="utf-8")
        return path

    def run(self, script: str, *, what: str = "a block", timeout: float = 300,
            check: bool = True) -> str:
        """Run a block as a person would in this terminal; its output (DocsRunError when it
        fails and ``check``)."""
        if self._next.get("stdin"):
            self.input_file(self._next["stdin"])
        for path, name in self._next.pop("files", []):
            self._send(f"cat {shlex.quote(str(self.input_file(name)))} > {shlex.quote(path)}",
                       timeout=30, what=f"writing {path}")
        if self._next.pop("background", False):
            self._count += 1
            block = self.blocks / f"{self._count:03d}-background.sh"
            block.write_text(script + "\n", encoding="utf-8")
            log = self.logs / f"{self._count:03d}-background.log"
            script = (f"setsid bash {shlex.quote(str(block))} < /dev/null "
                      f"> {shlex.quote(str(log))} 2>&1 &")
        status, output = self._send(script, timeout=timeout, what=what)
        if check and status != 0:
            raise DocsRunError(f"{what} failed (status {status}):\n{script}\n--- output:\n"
                               f"{output[-4000:]}")
        return output

    def path(self, inside: str) -> Path:
        """Where a file the pages wrote under an overlaid folder lies on this machine."""
        for where in OVERLAID:
            if inside == where or inside.startswith(where + "/"):
                name = where.strip("/").replace("/", "-")
                return self.scratch / "overlay" / name / inside[len(where):].lstrip("/")
        if inside.startswith("~/"):
            return self.home / inside[2:]
        return Path(inside)

    def close(self) -> None:
        """End the shell and, with its pid namespace, everything the pages started."""
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.write("exit\n")
                self._process.stdin.flush()
                self._process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=20)

    # -- what the page's directives ask -----------------------------------------------------

    def directive(self, arguments: str) -> None:
        """Act on ``<!-- docs-run: ARGUMENTS -->``."""
        words = arguments.split()
        if words == ["background"]:
            self._next["background"] = True
        elif len(words) == 2 and words[0] == "stdin":
            self._next["stdin"] = words[1]
        elif len(words) == 3 and words[0] == "file":
            self._next.setdefault("files", []).append((words[1], words[2]))
        elif len(words) == 2 and words[0] == "hook":
            self.hooks[words[1]](self)
        else:
            raise DocsRunError(f"unknown docs-run directive: {arguments!r}")


def _directives(document: Document) -> Any:
    lexer = DirectiveInHTMLCommentLexer(directive="docs-run", arguments=".+?")
    for lexed in lexer(document):
        arguments = lexed.lexemes["arguments"]
        yield Region(lexed.start, lexed.end, arguments,
                     lambda example: example.namespace["shell"].directive(example.parsed))


def _evaluate_block(example: Example) -> None:
    shell: DocShell = example.namespace["shell"]
    shell.page_blocks += 1
    shell.run(example.parsed, what=f"{example.path}, the block at line {example.line}")


SYBIL = Sybil(parsers=[CodeBlockParser(language="sh", evaluator=_evaluate_block),
                       SkipParser(), _directives])


def run_page(shell: DocShell, page: Path) -> int:
    """Run every ``sh`` block and directive of ``page`` in order; how many blocks ran."""
    document = SYBIL.parse(page)
    document.namespace["shell"] = shell
    before = shell.page_blocks
    for example in document:
        example.evaluate()
    return shell.page_blocks - before


def run_pages(shell: DocShell, pages: list[Path]) -> dict[str, int]:
    """Run the pages in order in one shell; the blocks each ran."""
    return {str(page.relative_to(REPO)): run_page(shell, page) for page in pages}


#: Reads the hospital's database inside the pages' namespace: prints its rows as JSON.
_READ_CENTRAL = """import json, sqlite3, sys
try:
    conn = sqlite3.connect("file:/var/lib/clinibox-central/central.db?mode=ro", uri=True,
                           timeout=10)
    print(json.dumps(conn.execute(sys.argv[1]).fetchall(), default=str))
except sqlite3.Error:
    print("[]")
"""


def central_rows(shell: DocShell, sql: str) -> list[tuple]:
    """Rows of the hospital's SQLite database the pages made (none while it is not there).

    Read inside the pages' namespace, through the overlay its processes use: a connection
    from outside, on the overlay's upper folder, sees none of their locks, takes itself for
    the only one and may rebuild the write-ahead log's index under the receiver writing (the
    database then reads as malformed, as a busy receiver showed)."""
    if not shell.path("/var/lib/clinibox-central/central.db").exists():
        return []
    pending = shell._next.pop("stdin", None)  # the next page block's input stays its own
    try:
        status, output = shell._send(f"python -c {shlex.quote(_READ_CENTRAL)} "
                                     f"{shlex.quote(sql)}", timeout=60,
                                     what="reading the hospital's database")
    finally:
        if pending is not None:
            shell._next["stdin"] = pending
    lines = output.strip().splitlines()
    if status != 0 or not lines:
        return []
    return [tuple(row) for row in json.loads(lines[-1])]


def browser(shell: DocShell, *args: str) -> dict:
    """A person at a browser inside the pages' namespace (``tests/docs_run_client.py``)."""
    return json.loads(shell.run(f"( cd {REPO} && python -m tests.docs_run_client "
                                f"{' '.join(args)} )", what=f"a browser: {args[0]}"))
