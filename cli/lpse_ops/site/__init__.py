"""lpse-backup: the site tool, standard library only, shipped to the hosts as one zipapp.

Every subcommand prints one JSON object of facts and machine-readable codes; the control machine
(``lpse_ops.actions``) decides what they mean. Nothing here imports outside ``lpse_ops.site`` and the
standard library: ``build.py`` packs these modules into ``/usr/local/sbin/lpse-backup``.
"""
