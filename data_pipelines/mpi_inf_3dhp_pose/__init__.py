"""MPI-INF-3DHP keypoints (TFDS name ``mpi_inf_3dhp_pose``)."""
