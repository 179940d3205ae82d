# TorchScript source stored with set_script_from_file and run with run_script.
# u is one rank's block, shape (nx, ny) as in Fortran: dim 0 is Fortran's first index i,
# dim 1 its second index j.


def smooth(u):
    return 0.5 * u + u.mean(dim=1, keepdim=True)
