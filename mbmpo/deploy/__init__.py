"""ROS-free logic of the deployment nodes: observation contract, safety, transitions, bag recording, graph."""
