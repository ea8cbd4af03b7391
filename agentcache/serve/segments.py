"""A request's message segments in time linear in its number of messages: the shared renderer over short windows."""

from __future__ import annotations

from agentcache.render import ChatRenderer

WINDOW = 8  # messages per window: the renderer's prefix renders cost the square of a window, not of the request


def message_segments(renderer: ChatRenderer, messages: list[dict[str, str]]) -> list[str]:
    """`renderer.message_segments(messages)`, the same strings, in time and memory linear in len(messages).

    The renderer cuts a template's output by rendering messages[:1], messages[:2], ... (each a prefix of the next),
    which for n messages renders n(n+1)/2 of them. A message's segment is what the template adds for it after the
    messages before it, and the templates the renderer accepts (prefix-stable) write it from the message and the one
    before it; so after the first window each window renders from the message before its own and drops that
    message's segment. The first window holds the leading system messages (rendered as one system turn) whole.
    """
    if not renderer.template_stable:  # plain ChatML: one string per message already
        return renderer.message_segments(messages)
    system = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
    first = min(len(messages), system + WINDOW)
    pieces = renderer.message_segments(messages[:first])
    out = pieces[:-1]
    for start in range(first, len(messages), WINDOW):
        pieces = renderer.segments(messages[start - 1:start + WINDOW])[1:]
        out += pieces[:-1]
    return out + pieces[-1:]  # the generation prompt, after the last message
