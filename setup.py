"""gato_robot: an ament_python ROS 2 package and a pip-installable Python project.

`sim/` and `training/` live at the top of the repository but install as `gato_robot.sim` and
`gato_robot.training` (generic top-level names like `sim` would clash with other packages in a user's
environment) through the symlinks gato_robot/sim -> ../sim and gato_robot/training -> ../training, not through a
`package_dir` mapping: `colcon build --symlink-install` runs `setup.py develop` in a build folder holding links to
the top-level packages only, and develop serves the package from there, so a mapped sub-package is missing
(colcon-core#272, pypa/setuptools#230). find_packages follows the links; wheels and plain installs copy the files.
"""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "gato_robot"

# torch is pinned: a plain `torch` requirement pulls gigabytes of CUDA packages on a CPU machine.
TORCH = ["torch==2.13.0", "safetensors>=0.4"]
ROS_WHEELS = [  # ROS 2 Kilted core from PyPI, for machines without a ROS install (never on a ROS install)
    "ros-rclpy", "ros-rmw-fastrtps-cpp", "ros-sensor-msgs", "ros-std-msgs", "ros-std-srvs",
    "ros-geometry-msgs", "ros-diagnostic-msgs", "ros-lifecycle-msgs", "ros-rosgraph-msgs",
]
EXTRAS = {
    "torch": TORCH,
    "export": TORCH + ["onnx>=1.17", "onnxscript>=0.2"],
    "onnx": ["onnxruntime>=1.20"],  # CPU provider
    "onnx-gpu": ["onnxruntime-gpu>=1.20"],  # CUDA provider, falls back to CPU (logged)
    "data": ["h5py>=3.10"],
    "sim": ["pybullet==3.2.7", "gymnasium>=1.0", "h5py>=3.10", "imageio>=2.30", "imageio-ffmpeg>=0.5",
            "matplotlib>=3.8", "tqdm>=4.60"],
    "train": TORCH + ["h5py>=3.10", "tqdm>=4.60", "tensorboard>=2.15"],
    "ros-wheels": ROS_WHEELS,
    # signed models (gato_robot.runtime.trust): OpenSSF model-signing, offline elliptic-curve keys. Its 1.1.1
    # imports pyOpenSSL (OpenSSL.crypto) at import without declaring it, so it is listed here.
    "signing": ["model-signing>=1.1,<1.2", "pyopenssl>=24"],
    # colcon: the build tests; catkin-pkg: package.xml checks (colcon-ros pulls it in too)
    "test": ["pytest>=8", "hypothesis>=6.100", "ruff>=0.8", "colcon-common-extensions>=0.3", "catkin-pkg>=1.0"],
    # issue 8's domains: BabyAI (minigrid, pulls pygame-ce), Meta-World (pins its MuJoCo), PNG/JPEG reading,
    # Hugging Face datasets' Parquet/Arrow shards (pyarrow; not the datasets library itself)
    "domains": ["minigrid>=3.0", "metaworld>=3.1", "imageio>=2.30", "h5py>=3.10", "pyarrow>=15"],
    # rosbag2 / MCAP logs: pure Python, no ROS install needed
    "logs": ["rosbags>=0.11", "mcap>=1.6", "h5py>=3.10", "imageio>=2.30", "imageio-ffmpeg>=0.5", "matplotlib>=3.8"],
    # LeRobotDataset v3 in and out (gato_robot.data.lerobot): Parquet (pyarrow) and video (PyAV, which bundles
    # FFmpeg with libx264, libsvtav1 and dav1d); not lerobot itself, which pins an older torch
    "lerobot": ["pyarrow>=15", "av>=12", "h5py>=3.10", "tqdm>=4.60"],
}
# Everything this project's CI machine (no ROS install, no GPU) needs.
DEV = ("export", "onnx", "data", "sim", "train", "ros-wheels", "test", "domains", "logs", "signing", "lerobot")
EXTRAS["dev"] = sorted({r for k in DEV for r in EXTRAS[k]})

setup(
    name=PACKAGE,
    version="0.1.0",
    description="A Gato-style generalist robot policy: tokenizer, transformer, ONNX runtime, ROS 2 stack, "
    "PyBullet RGB-stacking benchmark and trainer",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/robots", glob("config/robots/*.yaml")),  # gato_robot.robots.load_embodiment
        # the shipped policy (gato_robot.runtime.shipped): model.onnx, manifest.json and its model card
        *[(f"share/{PACKAGE}/{d}", sorted(glob(f"{d}/*"))) for d in sorted(glob("models/*")) if os.path.isdir(d)],
    ],
    # yourdfpy: reads the URDF for forward kinematics (gato_robot.kinematics; the tokenizer's tool_pose_source fk)
    install_requires=["numpy>=1.24", "sentencepiece>=0.2", "pyyaml>=6", "yourdfpy>=0.0.60"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="gato_robot developers",
    maintainer_email="dev@gato-robot.invalid",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "gato-demo = gato_robot.cli.demo:main",
            "gato-token-layout = gato_robot.cli.demo:layout_main",
            "gato-export-onnx = gato_robot.model.export:main",
            "gato-sign-model = gato_robot.runtime.trust:main",
            "gato-train = gato_robot.training.train:main",
            "gato-stack = gato_robot.ros.launcher:main",
            "gato_tokenizer_node = gato_robot.ros.tokenizer_node:main",
            "gato_policy_node = gato_robot.ros.policy_node:main",
            "gato_controller_node = gato_robot.ros.controller_node:main",
            "gato_sim_node = gato_robot.ros.sim_node:main",
            "gato_recorder_node = gato_robot.ros.recorder:main",
            "gato-record = gato_robot.ros.recorder:main",
            "gato-replay = gato_robot.ros.replayer:main",
            "gato-log-convert = gato_robot.logs.convert:main",
            "gato-log-sim-replay = gato_robot.logs.sim_replay:main",
            "gato-log-video = gato_robot.logs.video:main",
            "gato-import-lerobot = gato_robot.data.lerobot:import_main",
            "gato-export-lerobot = gato_robot.data.lerobot:export_main",
            "gato-record-demos = gato_robot.ros.record_demos:main",
            "gato-scripted-operator = gato_robot.ros.scripted_operator:main",
            "gato-teleop = gato_robot.ros.teleop:main",
        ],
    },
)
