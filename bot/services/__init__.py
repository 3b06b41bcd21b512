"""Discord-free services the features call: intake of new jobs, account and query commands,
moderation, and the job cards read model. Each returns plain values; bot/render.py turns them into
text."""
