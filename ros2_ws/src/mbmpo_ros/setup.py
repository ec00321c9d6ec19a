"""ament_python package: installs the nodes, the launch files (launch/, which the repository's top-level
launch/ links to) and the training presets (config/, a link to the repository's config/).

colcon refuses absolute `data_files` and, with --symlink-install, links `..` paths outside the install, so
every data file is named relative to this folder and lies inside it (the links are followed).
"""

from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "mbmpo_ros"
HERE = Path(__file__).resolve().parent


def _files(pattern: str) -> list[str]:
    """Files matching `pattern` under this package folder, as paths relative to it."""
    return sorted(str(Path(p).relative_to(HERE)) for p in glob(str(HERE / pattern)) if Path(p).is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", _files("config/*.yaml")),
        (f"share/{PACKAGE}/config/presets", _files("config/presets/*.yaml")),
        (f"share/{PACKAGE}/config/paper", _files("config/paper/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="MB-MPO maintainers",
    description="ROS 2 nodes for MB-MPO",
    license="MIT",
    entry_points={
        "console_scripts": [
            f"sim_node = {PACKAGE}.sim_node:main",
            f"policy_node = {PACKAGE}.policy_node:main",
            f"data_node = {PACKAGE}.data_node:main",
            f"trainer_node = {PACKAGE}.trainer_node:main",
        ],
    },
)
