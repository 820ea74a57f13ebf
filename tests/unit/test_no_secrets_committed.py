"""No secret-looking literal is in the repository (tracked files and new, not-ignored ones)."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PATTERNS = {
    "stripe live key": re.compile(r"[sr]k_live_[A-Za-z0-9]{10,}"),
    "stripe test key": re.compile(r"sk_test_[A-Za-z0-9]{16,}"),
    "webhook signing secret": re.compile(r"whsec_[A-Za-z0-9+/=]{16,}"),
    "private key block": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"),
    "google service account key": re.compile(r"\"private_key_id\"\s*:\s*\"[0-9a-f]{20,}\""),
    "google api key": re.compile(r"AIza[0-9A-Za-z_\-]{35}"),
    "aws access key": re.compile(r"AKIA[0-9A-Z]{16}"),
    "khalti key": re.compile(r"(?:live|test)_secret_key_[0-9a-f]{20,}"),
    "credential assignment": re.compile(
        r"(?i)(?:secret|token|password|api_key|apikey)[a-z_]*\s*[:=]\s*[\"'][A-Za-z0-9+/=_\-]{24,}[\"']"
    ),
}
# Published sandbox values the tests may use (GATEWAYS.md).
ALLOWED = {"8gBm/:&EnhH.1/q"}


def repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def test_the_scan_sees_the_repository():
    names = {p.relative_to(ROOT).as_posix() for p in repository_files()}
    assert "pyproject.toml" in names and "shared/secrets.py" in names


def test_no_file_contains_a_secret_looking_literal():
    findings = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for label, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                if match.group(0) not in ALLOWED:
                    line = text.count("\n", 0, match.start()) + 1
                    findings.append(f"{path.relative_to(ROOT)}:{line}: {label}")
    assert findings == []


def test_the_patterns_catch_what_they_are_for():
    samples = {
        "stripe live key": "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc",
        "webhook signing secret": "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "credential assignment": 'ADMIN_TOKEN = "' + "q" * 30 + '"',
    }
    for label, sample in samples.items():
        assert PATTERNS[label].search(sample), label
