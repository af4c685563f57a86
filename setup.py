"""Ships the top-level ``datasets.yaml`` inside the wheel as ``bench/datasets.yaml``.

The registry file stays at the repository's top level, where users read and edit it; an installed
package has no top level, so the build copies the file next to the code that reads it
(`bench.datasets.registry.DEFAULT_PATH` prefers that copy when it exists).
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithRegistry(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib, "bench", "datasets.yaml")
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(ROOT / "datasets.yaml"), str(target))

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib, "bench", "datasets.yaml"))]


setup(cmdclass={"build_py": BuildPyWithRegistry})
