"""ROS 2 adapters: the only part of gato_robot that imports rclpy or message packages (docs/ros.md).

- ``stack``: which nodes run with which parameters (the launch file and ``gato-stack`` both use it); no rclpy.
- ``wire``: the topic contract's array layouts as pure numpy functions; no rclpy.
- ``common``: QoS profiles, names, stamps, parameter declaration, message builders, the node ``run`` loop.
- ``tokenizer_node``, ``policy_node``, ``controller_node``, ``sim_node``: the nodes; ``launcher``: ``gato-stack``.
- ``testing``: node processes on a private domain and a probe node, for tests and benchmarks.
"""
