"""gato_robot: a Gato-style generalist robot policy, from tokenizer to ROS 2 arm commands.

Layers (dependencies point inward; tests/test_architecture.py enforces them):

- ``gato_robot.core``: specs, tokenizer, sequence builder. numpy + stdlib (+ sentencepiece for text).
- ``gato_robot.model``: the transformer, policy, checkpoints and ONNX export (torch).
- ``gato_robot.runtime``: the ONNX Runtime policy (onnxruntime + numpy, never torch).
- ``gato_robot.data``: the episode file format (h5py).
- ``gato_robot.sim``: the PyBullet RGB-stacking benchmark (gymnasium; knows nothing of ROS).
- ``gato_robot.training``: the trainer (torch).
- ``gato_robot.ros``: ROS 2 adapters, the only place that imports rclpy or message packages.
"""

__version__ = "0.1.0"
