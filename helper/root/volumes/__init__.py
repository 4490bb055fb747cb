"""The intercepted pod's volumes on this machine: sshfs over a tunnel stream to the pod's agent (SFTP).

:func:`tether.helper.root.volumes.mount.mount_pod_volumes` is the one entry point (an intercept calls it and
later ``unmount()`` on what it returns); ``mountdir`` checks and prepares the mount point, ``sshfs`` builds the
commands, ``cleanup`` unmounts what a crashed helper left mounted.
"""
