"""The Model Context Protocol front end: the tools an AI agent calls to ask for sign-off.

``tools`` defines them once, over a ``Backend``; ``served`` mounts them at ``/mcp`` in
``signoff serve``, on the service, with the API's tokens; ``stdio`` serves them to a local
client, through the HTTP API and the Python client. ``answers`` shapes what the agent
reads: the request as the API shows it, and a sentence that says what to do next.
"""
