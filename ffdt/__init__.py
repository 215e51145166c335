"""ffdt, the FFmpeg distributed transcoder: one package of our own name.

Installed (pyproject.toml), ffdt.client, ffdt.common and ffdt.tracker are its subpackages. In a
checkout they are the top-level client/, common/ and tracker/ folders, the source layout: this
package's path then includes the checkout's root, so `import ffdt.client.job` finds client/job.py.
"""
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "client" / "boss.py").is_file():
    __path__.append(str(_root))        # noqa: F821 - a package's own __path__
