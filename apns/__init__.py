"""Standalone HTTP/2 APNs client and strict local APNs simulator (imports nothing from ntf_server)."""
