"""The local Hub emulator behind scripts/hub_emulator.py, one concern per module:

store    the repo store on disk and `import` (commits, hashes computed once)
state    knobs, fault decisions, the request log, commit metadata cache, CDN URL signing
http_io  what both origins share: answers, ranges, fault injection, paced and cut bodies
hub_api  the Hub origin: API calls, resolve, auth and errors
admin    /_emulator/ calls: knobs, log, branch moves
cdn      the CDN origin: signed URLs over ROOT-relative paths
"""
