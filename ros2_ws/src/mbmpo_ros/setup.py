"""ament_python package: installs the nodes, and launch/ and config/ from the repository's top level."""

from glob import glob
from pathlib import Path

from setuptools import setup

PACKAGE = "mbmpo_ros"
ROOT = Path(__file__).resolve().parents[3]  # the repository: launch/ and config/ live there


def _rel(pattern: str) -> list[str]:
    return sorted(glob(str(ROOT / pattern)))


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", _rel("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", _rel("config/*.yaml")),
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
