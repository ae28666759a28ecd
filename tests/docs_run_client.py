"""A person at a browser, inside the docs' namespace (``tests/docs_run.py``): the console's
radiologist gives a verdict, the clinic's nurse reads the box's study page, the IT person
opens the Rollouts page. Run there with the venv's python; prints one JSON object (the test
asserts on it).

    python -m tests.docs_run_client review BASE NAME PASSWORD NOTE
    python -m tests.docs_run_client study BASE NAME PASSWORD
    python -m tests.docs_run_client rollouts BASE NAME PASSWORD
"""

from __future__ import annotations

import json
import re
import sys
import warnings

import requests

warnings.filterwarnings("ignore", message="Unverified HTTPS request")
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def _session(base: str, name: str, password: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify=False
    session.verify = False  # the self-signed certificates the pages' services made
    page = session.get(f"{base}/login", timeout=30).text
    session.headers["Referer"] = f"{base}/"  # a browser's same-origin Referer (CSRF check)
    answer = session.post(f"{base}/login", data={
        "name": name, "password": password, "csrf_token": _TOKEN.search(page).group(1)},
        timeout=30, allow_redirects=False)
    if answer.status_code != 302:
        raise SystemExit(f"login as {name} at {base} answered {answer.status_code}")
    return session


def review(base: str, name: str, password: str, note: str) -> dict:
    """Open the newest alert on the console and refer the patient with ``note``."""
    session = _session(base, name, password)
    listing = session.get(f"{base}/alerts", timeout=30).text
    ids = [int(x) for x in re.findall(r'data-alert-id="(\d+)"', listing)]
    page = session.get(f"{base}/alerts/{max(ids)}", timeout=30).text
    answer = session.post(f"{base}/alerts/{max(ids)}", data={
        "verdict": "refer", "note": note, "csrf_token": _TOKEN.search(page).group(1)},
        timeout=30, allow_redirects=False)
    return {"alert": max(ids), "status": answer.status_code}


def study(base: str, name: str, password: str) -> dict:
    """The box's worklist, then the page of the first study with a hospital review."""
    session = _session(base, name, password)
    worklist = session.get(f"{base}/", timeout=30).text
    links = re.findall(r'href="(/study/\d+)"', worklist)
    for link in dict.fromkeys(links):
        page = session.get(f"{base}{link}", timeout=30).text
        if 'id="hospital-review"' in page:
            return {"study": link, "page": page}
    return {"study": None, "page": worklist}


def rollouts(base: str, name: str, password: str) -> dict:
    """The console's Rollouts page (its form lists the archives of ``packages_dir``)."""
    session = _session(base, name, password)
    return {"page": session.get(f"{base}/rollouts", timeout=30).text}


def main(argv: list[str]) -> int:
    """Run one action; print its JSON."""
    action, *rest = argv
    result = {"review": review, "study": study, "rollouts": rollouts}[action](*rest)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
