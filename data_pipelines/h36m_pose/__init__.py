"""Human3.6M 3D/2D keypoints from VideoPose3D's npz files (TFDS name ``h36m_pose``)."""
