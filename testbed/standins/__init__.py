"""Stand-ins for the Kubernetes control-plane binaries the testbed hosts run.

`kube_standin.py` is a standalone stdlib-only script (shebang /usr/bin/python3) that rootfs installs as
/usr/local/bin/kube-apiserver, kube-controller-manager and kube-scheduler; it dispatches on argv[0].
Nothing here is imported at run time by the hosts; this package only ships the file.
"""
