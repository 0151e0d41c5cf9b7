"""`ntf-server demo`: the whole system on one machine, nothing to prepare beyond installation.

Modules: `world` (temporary directory, config, APNs simulator, SMP stand-ins, server), `phone` (the
simulated app, decrypting pushes into labels), `admin` (the admin API client and its availability flag),
`report` (pure: events -> live lines and the summary table), `script` (the story), `cli` (the command).
"""
