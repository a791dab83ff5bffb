"""Anthropic's own Python SDK against a running herd serve.

Usage: python anthropic_client.py BASE_URL MODEL
"""

import json
import sys

import anthropic

base, model = sys.argv[1], sys.argv[2]
client = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
ask = [{"role": "user", "content": "Name three colors."}]
# Recent SDKs dropped the sampling parameters from their signatures; the
# API still takes them, so greedy decoding goes in the body.
greedy = {"temperature": 0}

# Plain.
msg = client.messages.create(
    model=model, max_tokens=16, extra_body=greedy, system="Be brief.", messages=ask
)
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.content[0].type == "text" and msg.content[0].text, msg
assert msg.stop_reason in ("end_turn", "max_tokens"), msg
assert msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, msg

# Streamed: the SDK assembles the events into the same message.
with client.messages.stream(
    model=model, max_tokens=16, extra_body=greedy, system="Be brief.", messages=ask
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text == msg.content[0].text, (text, msg)
assert final.content[0].text == text and final.stop_reason == msg.stop_reason, final
assert final.usage.output_tokens == msg.usage.output_tokens, final

# count_tokens counts what the generation counted.
count = client.messages.count_tokens(model=model, system="Be brief.", messages=ask)
assert count.input_tokens == msg.usage.input_tokens, (count, msg.usage)

# Tool use round trip.
tools = [
    {
        "name": "get_weather",
        "description": "The current weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
question = {"role": "user", "content": "What is the weather in Paris?"}
call_msg = client.messages.create(
    model=model,
    max_tokens=64,
    extra_body=greedy,
    tools=tools,
    tool_choice={"type": "tool", "name": "get_weather"},
    messages=[question],
)
assert call_msg.stop_reason == "tool_use", call_msg
call = next(b for b in call_msg.content if b.type == "tool_use")
assert call.name == "get_weather" and isinstance(call.input.get("city"), str), call
with client.messages.stream(
    model=model,
    max_tokens=64,
    extra_body=greedy,
    tools=tools,
    tool_choice={"type": "any"},
    messages=[question],
) as stream:
    streamed = stream.get_final_message()
assert streamed.stop_reason == "tool_use", streamed
assert any(b.type == "tool_use" and b.name == "get_weather" for b in streamed.content)
answer = client.messages.create(
    model=model,
    max_tokens=24,
    extra_body=greedy,
    tools=tools,
    messages=[
        question,
        {"role": "assistant", "content": call_msg.content},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 24 C"}
            ],
        },
    ],
)
assert answer.usage.input_tokens > call_msg.usage.input_tokens, answer
assert answer.content, answer

# Structured output (output_config.format), enforced by the grammar.
structured = client.messages.create(
    model=model,
    max_tokens=32,
    extra_body=greedy,
    messages=[{"role": "user", "content": "Pick a color."}],
    output_config={
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"color": {"type": "string"}},
                "required": ["color"],
                "additionalProperties": False,
            },
        }
    },
)
assert isinstance(json.loads(structured.content[0].text)["color"], str), structured

# Errors arrive as the SDK's typed exceptions.
try:
    client.messages.create(model="ai/nothing-here", max_tokens=4, messages=ask)
    raise AssertionError("an unknown model must fail")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
try:
    client.messages.create(
        model=model, max_tokens=4, messages=ask, extra_body={"frobnicate": 1}
    )
    raise AssertionError("an unknown field must fail")
except anthropic.BadRequestError as e:
    assert "frobnicate" in e.body["error"]["message"], e.body

print("anthropic client: ok")
