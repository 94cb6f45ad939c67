"""``python -m tsm_deploy.cli``: the same as the ``tsm-deploy`` command."""

from . import main

main()
