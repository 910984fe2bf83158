"""scripts/system-packages.sh, the first step of `make test` and .ci/run: nothing to do when every
package is there; installs the missing ones as root or through password-less sudo; otherwise
stops at once naming the command.

The script runs for real, with a PATH of stand-ins for the system: dpkg-query answers from a
list, apt-get and sudo write what they were asked to a log, ``id`` says who runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "system-packages.sh"
PACKAGES = ("dataset-fashion-mnist", "nghttp2-client", "prometheus", "nginx")
REAL_TOOLS = ("awk", "cat", "env", "grep")
"""What the script uses from the real system; everything else on its PATH is a stand-in."""

FAKES = {
    # Known packages print "name status"; unknown ones nothing on stdout and a non-zero exit.
    "dpkg-query": """
status=0
for package in "$@"; do
  case "$package" in -*) continue ;; esac
  if [[ " $INSTALLED " == *" $package "* ]]; then echo "$package installed"; else status=1; fi
done
exit $status
""",
    "apt-get": 'echo "apt-get $* (DEBIAN_FRONTEND=$DEBIAN_FRONTEND)" >> "$LOG"',
    "id": 'echo "$UID_SEEN"',
    "sudo": """
[ "$1" = -n ] && shift
if [ "$*" = true ]; then [ "$SUDO_OK" = 1 ]; exit; fi
echo "sudo $1" >> "$LOG"
exec "$@"
""",
    "kubectl": "exit 0",
    "node": "exit 0",
    "npm": "exit 0",
}


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    log: list[str]


@pytest.fixture
def system(tmp_path: Path) -> Path:
    """A folder of stand-ins and links to the few real tools; the tests remove what they lack."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in FAKES.items():
        fake = bin_dir / name
        fake.write_text(f"#!{shutil.which('bash')}\n{body.strip()}\n")
        fake.chmod(0o755)
    for name in REAL_TOOLS:
        real = shutil.which(name)
        assert real, name
        (bin_dir / name).symlink_to(real)
    return bin_dir


def run(bin_dir: Path, *, installed: tuple[str, ...], uid: int = 1000,
        sudo_ok: bool = False) -> Run:
    log = bin_dir.parent / "log"
    log.touch()
    env = {"PATH": str(bin_dir), "INSTALLED": " ".join(installed), "LOG": str(log),
           "UID_SEEN": str(uid), "SUDO_OK": "1" if sudo_ok else "0", "HOME": os.environ["HOME"]}
    bash = shutil.which("bash")
    assert bash
    result = subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True,
                            timeout=30, check=False)
    return Run(result.returncode, result.stdout, result.stderr, log.read_text().splitlines())


def test_everything_there_costs_nothing(system: Path) -> None:
    result = run(system, installed=PACKAGES)
    assert (result.returncode, result.stdout, result.stderr, result.log) == (0, "", "", [])


def test_without_root_or_sudo_it_stops_naming_the_command(system: Path) -> None:
    (system / "sudo").unlink()
    result = run(system, installed=("dataset-fashion-mnist", "prometheus"))
    assert result.returncode == 1
    assert result.log == []
    assert ("sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            "nghttp2-client nginx") in result.stderr


def test_sudo_that_asks_for_a_password_counts_as_none(system: Path) -> None:
    result = run(system, installed=PACKAGES[:3], sudo_ok=False)
    assert result.returncode == 1
    assert result.log == []
    assert "apt-get install -y --no-install-recommends nginx" in result.stderr


def test_as_root_it_installs_what_is_missing(system: Path) -> None:
    (system / "sudo").unlink()
    result = run(system, installed=("nginx",), uid=0)
    assert result.returncode == 0, result.stderr
    assert result.log == [
        "apt-get update -q (DEBIAN_FRONTEND=noninteractive)",
        "apt-get install -y -q --no-install-recommends dataset-fashion-mnist nghttp2-client "
        "prometheus (DEBIAN_FRONTEND=noninteractive)",
    ]


def test_with_passwordless_sudo_it_installs_through_sudo(system: Path) -> None:
    result = run(system, installed=PACKAGES[1:], sudo_ok=True)
    assert result.returncode == 0, result.stderr
    assert result.log == [
        "sudo env", "apt-get update -q (DEBIAN_FRONTEND=noninteractive)",
        "sudo env", "apt-get install -y -q --no-install-recommends dataset-fashion-mnist "
        "(DEBIAN_FRONTEND=noninteractive)",
    ]


def test_node_and_npm_are_asked_for_only_when_missing(system: Path) -> None:
    (system / "sudo").unlink()
    (system / "npm").unlink()
    result = run(system, installed=PACKAGES)
    assert result.returncode == 1
    assert "--no-install-recommends nodejs npm" in result.stderr


def test_without_kubectl_it_stops_before_looking_at_packages(system: Path) -> None:
    (system / "kubectl").unlink()
    (system / "dpkg-query").unlink()
    result = run(system, installed=PACKAGES, uid=0)
    assert result.returncode == 1
    assert "kubectl >= 1.27" in result.stderr
    assert result.log == []
