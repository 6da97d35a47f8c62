"""PyBullet re-creation of the RGB-stacking benchmark (installed as gato_robot.sim)."""
