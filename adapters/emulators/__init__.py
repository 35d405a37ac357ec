"""Protocol emulators: one HTTP server per provider family, for tests and the sandbox.

Each follows `shared/reference/provider-protocols.md` to the letter (auth, field names, status
values, error shapes, quirks) and makes a real MP4 from the submitted image.
"""
