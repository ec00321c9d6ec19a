"""ROS 2 nodes of MB-MPO: thin adapters over the `mbmpo` library."""
