"""The openai SDK's Responses API against a running herd serve.

Usage: python openai_responses_client.py BASE_URL MODEL
"""

import json
import sys

import openai

base, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

# Plain.
first = client.responses.create(
    model=model,
    instructions="Be brief.",
    input="Name three colors.",
    temperature=0,
    max_output_tokens=16,
)
assert first.object == "response" and first.status in ("completed", "incomplete"), first
assert first.output_text, first
assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0, first

# Streamed: the text deltas add up to the same answer.
events = list(
    client.responses.create(
        model=model,
        instructions="Be brief.",
        input="Name three colors.",
        temperature=0,
        max_output_tokens=16,
        stream=True,
    )
)
kinds = [e.type for e in events]
assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete"), kinds
assert "response.output_item.added" in kinds and "response.output_text.done" in kinds, kinds
text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
assert text == first.output_text, (text, first.output_text)
assert [e.sequence_number for e in events] == list(range(len(events))), kinds

# Stored: retrieve, list input items, continue with previous_response_id.
again = client.responses.retrieve(first.id)
assert again.id == first.id and again.output_text == first.output_text, again
items = list(client.responses.input_items.list(first.id))
assert len(items) == 1 and items[0].role == "user", items
follow = client.responses.create(
    model=model,
    previous_response_id=first.id,
    input="Now name one more.",
    temperature=0,
    max_output_tokens=16,
)
assert follow.previous_response_id == first.id, follow
assert follow.usage.input_tokens > first.usage.input_tokens, (follow.usage, first.usage)

# Structured output with a JSON schema.
structured = client.responses.create(
    model=model,
    input="Pick a color.",
    temperature=0,
    max_output_tokens=32,
    text={
        "format": {
            "type": "json_schema",
            "name": "color",
            "schema": {
                "type": "object",
                "properties": {"color": {"type": "string"}},
                "required": ["color"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    },
)
assert isinstance(json.loads(structured.output_text)["color"], str), structured

# Function tool round trip.
tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
called = client.responses.create(
    model=model,
    input="What is the weather in Paris?",
    tools=tools,
    tool_choice={"type": "function", "name": "get_weather"},
    temperature=0,
    max_output_tokens=64,
)
call = next(o for o in called.output if o.type == "function_call")
assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str), call
answered = client.responses.create(
    model=model,
    previous_response_id=called.id,
    input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 24 C"}],
    tools=tools,
    temperature=0,
    max_output_tokens=24,
)
assert answered.status in ("completed", "incomplete") and answered.output, answered

# Delete; then it is gone.
deleted = client.responses.delete(first.id)
try:
    client.responses.retrieve(first.id)
    raise AssertionError("a deleted response must be gone")
except openai.NotFoundError:
    pass

# Unsupported fields are refused by name.
try:
    client.responses.create(model=model, input="x", reasoning={"effort": "high"})
    raise AssertionError("reasoning must be refused")
except openai.BadRequestError as e:
    assert e.body["param"] == "reasoning", e.body

print("openai responses client: ok")
