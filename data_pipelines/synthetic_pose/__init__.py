"""Procedural Human3.6M-like motion through the real H36M cameras (TFDS name ``synthetic_pose``)."""
