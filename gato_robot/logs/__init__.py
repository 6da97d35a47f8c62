"""Logged episodes: rosbag2 + MCAP logs of the stack's topics, read robustly, converted to training episodes.

No rclpy here (the recorder and replayer nodes live in ``gato_robot.ros``): bags are written and read with the
``rosbags`` and ``mcap`` libraries (``pip install gato_robot[logs]``).

- :mod:`gato_robot.logs.bag`: the topic table, a CRC-on MCAP writer for rosbags, the linear CRC-checked reader.
- :mod:`gato_robot.logs.convert`: log -> HDF5 episodes (``gato_robot.data.episodes``) with a drop report.
- :mod:`gato_robot.logs.synthetic`: a simulated-stack log without ROS, for tests and benchmarks.
"""
