"""Looking inside a trained network: its kernels (`filters`), the training images its last
hidden layer puts nearest a validation image (`neighbours`), its answer for any image file
(`predict`), and where it errs on the validation split (`eval --confusion/--errors`).

Every command reads the checkpoint's own spec and statistics, so it computes what the run
computed, with no spec file to keep beside the checkpoint.
"""
