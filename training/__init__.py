"""The trainer (installed as gato_robot.training)."""
