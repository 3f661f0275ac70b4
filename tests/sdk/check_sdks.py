"""The official Python SDKs (openai, anthropic, google-genai) against a running gateway.

Each client is built exactly as a user would build it against the real provider, with only its
base URL and API key changed (SPEC section 3). Reads from the environment:

- GATEWAY_URL: the proxy listener, e.g. http://127.0.0.1:8080
- GATEWAY_KEY: an active proxy key
- REVOKED_KEY: a revoked proxy key

The gateway is expected to forward to the e2e mock provider (tests/src/mock.rs), so the
expected contents ("Hello from the mock.", "part0 " ...) and token counts (11 in, 7 out) are
the mock's. Prints one line per check and exits 1 at the first failure, with the reason.

Arguments name the SDKs to check (`openai`, `anthropic`, `gemini`); none means all three.
`configured-openai`, `configured-anthropic` and `azure` check the configured providers of
tests/e2e/providers.rs (SPEC section 10) instead; they are run only by name.
Run by tests/e2e/sdk.rs, or by hand with the venv's python from tests/sdk/setup.sh.
"""

import io
import os
import sys
import traceback

import anthropic
import openai
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

GATEWAY_URL = os.environ["GATEWAY_URL"].rstrip("/")
KEY = os.environ["GATEWAY_KEY"]
REVOKED_KEY = os.environ["REVOKED_KEY"]

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-sonnet-4-6"
GEMINI_MODEL = "gemini-2.0-flash"
MOCK_REPLY = "Hello from the mock."
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 7
STREAM_PARTS = ["part0 ", "part1 ", "part2 "]
UPLOAD_BYTES = b"twelve bytes"
AZURE_DEPLOYMENT = "prod-mini"
AZURE_API_VERSION = "2024-10-21"


class CheckFailed(Exception):
    pass


def expect(condition, message):
    if not condition:
        raise CheckFailed(message)


def check(name, function):
    """Runs one check; prints `ok name: detail` or the failure, and exits at the first one."""
    try:
        detail = function()
    except CheckFailed as failure:
        print(f"FAIL {name}: {failure}", flush=True)
        sys.exit(1)
    except Exception as error:  # noqa: BLE001 - any SDK error is a failed check
        print(f"FAIL {name}: {type(error).__module__}.{type(error).__name__}: {error}", flush=True)
        body = getattr(error, "body", None) or getattr(error, "details", None)
        if body is not None:
            print(f"     response body: {body!r}", flush=True)
        traceback.print_exc(file=sys.stdout)
        sys.exit(1)
    print(f"ok   {name}: {detail}", flush=True)


def expect_revoked(error, status, code_and_body):
    """The gateway's 403 `key_revoked` as the SDK's parsed error."""
    expect(status == 403, f"status {status}, expected 403; {error!r}")
    expect(
        any("key_revoked" in repr(x) for x in code_and_body),
        f"`key_revoked` in neither the code nor the body: {code_and_body!r}",
    )


# --- openai ------------------------------------------------------------------------------


def openai_checks(route):
    client = openai.OpenAI(base_url=f"{GATEWAY_URL}{route}", api_key=KEY)
    messages = [{"role": "user", "content": "Say hello."}]

    def create():
        completion = client.chat.completions.create(model=OPENAI_MODEL, messages=messages)
        content = completion.choices[0].message.content
        expect(content == MOCK_REPLY, f"content {content!r}, expected {MOCK_REPLY!r}")
        expect(completion.usage is not None, "no usage")
        usage = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
        expect(usage == (PROMPT_TOKENS, COMPLETION_TOKENS), f"usage {usage}")
        return repr(content)

    def stream():
        pieces, finish, chunks = [], None, 0
        for chunk in client.chat.completions.create(
            model=OPENAI_MODEL, messages=messages, stream=True
        ):
            chunks += 1
            expect(chunk.usage is None, f"a usage chunk the client did not ask for: {chunk}")
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                finish = choice.finish_reason or finish
        expect(pieces == STREAM_PARTS, f"deltas {pieces!r}, expected {STREAM_PARTS!r}")
        expect(finish == "stop", f"finish_reason {finish!r}")
        return f"{chunks} chunks, deltas {''.join(pieces)!r}, finish {finish!r}"

    def stream_with_usage():
        pieces, usage = [], None
        for chunk in client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        ):
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
            if chunk.usage is not None:
                usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        expect(pieces == STREAM_PARTS, f"deltas {pieces!r}")
        expect(usage == (PROMPT_TOKENS, COMPLETION_TOKENS), f"usage {usage}")
        return f"usage {usage}"

    def models():
        ids = [model.id for model in client.models.list()]
        expect("gpt-4o" in ids and "gpt-4o-mini" in ids, f"models {ids}")
        return ", ".join(ids)

    def revoked():
        revoked_client = openai.OpenAI(base_url=f"{GATEWAY_URL}{route}", api_key=REVOKED_KEY)
        try:
            revoked_client.chat.completions.create(model=OPENAI_MODEL, messages=messages)
        except openai.PermissionDeniedError as error:
            expect_revoked(error, error.status_code, [error.code, error.body])
            return f"PermissionDeniedError {error.status_code} code={error.code!r}"
        raise CheckFailed("a revoked key was not refused")

    check(f"openai {route} chat.completions.create", create)
    check(f"openai {route} chat.completions.create(stream=True)", stream)
    check(f"openai {route} stream with include_usage", stream_with_usage)
    check(f"openai {route} models.list", models)
    check(f"openai {route} revoked key", revoked)


# --- anthropic ---------------------------------------------------------------------------


def anthropic_checks(route="/anthropic"):
    client = anthropic.Anthropic(base_url=f"{GATEWAY_URL}{route}", api_key=KEY)
    messages = [{"role": "user", "content": "Say hello."}]

    def create():
        message = client.messages.create(model=ANTHROPIC_MODEL, max_tokens=64, messages=messages)
        text = "".join(block.text for block in message.content if block.type == "text")
        expect(text == MOCK_REPLY, f"text {text!r}, expected {MOCK_REPLY!r}")
        usage = (message.usage.input_tokens, message.usage.output_tokens)
        expect(usage == (PROMPT_TOKENS, COMPLETION_TOKENS), f"usage {usage}")
        return repr(text)

    def stream():
        with client.messages.stream(
            model=ANTHROPIC_MODEL, max_tokens=64, messages=messages
        ) as events:
            pieces = list(events.text_stream)
            final = events.get_final_message()
        expect(pieces == STREAM_PARTS, f"text deltas {pieces!r}, expected {STREAM_PARTS!r}")
        text = "".join(block.text for block in final.content if block.type == "text")
        expect(text == "".join(STREAM_PARTS), f"final text {text!r}")
        expect(final.stop_reason == "end_turn", f"stop_reason {final.stop_reason!r}")
        expect(
            final.usage.output_tokens == COMPLETION_TOKENS,
            f"output tokens {final.usage.output_tokens}, expected {COMPLETION_TOKENS}",
        )
        expect(
            final.usage.input_tokens == PROMPT_TOKENS,
            f"input tokens {final.usage.input_tokens}, expected {PROMPT_TOKENS}",
        )
        return f"{text!r}, usage in {final.usage.input_tokens} out {final.usage.output_tokens}"

    def models():
        ids = [model.id for model in client.models.list()]
        expect(len(ids) > 0, "no models")
        return ", ".join(ids)

    def revoked():
        revoked_client = anthropic.Anthropic(base_url=f"{GATEWAY_URL}{route}", api_key=REVOKED_KEY)
        try:
            revoked_client.messages.create(model=ANTHROPIC_MODEL, max_tokens=8, messages=messages)
        except anthropic.PermissionDeniedError as error:
            expect_revoked(error, error.status_code, [error.body])
            return f"PermissionDeniedError {error.status_code}"
        raise CheckFailed("a revoked key was not refused")

    check(f"anthropic {route} messages.create", create)
    check(f"anthropic {route} messages.stream", stream)
    check(f"anthropic {route} models.list", models)
    check(f"anthropic {route} revoked key", revoked)


# --- Azure OpenAI (SPEC section 10) --------------------------------------------------------


def azure_checks():
    """openai's AzureOpenAI client with its endpoint pointed at the gateway's /azure route."""

    def client_with(key):
        return openai.AzureOpenAI(
            azure_endpoint=f"{GATEWAY_URL}/azure", api_key=key, api_version=AZURE_API_VERSION
        )

    client = client_with(KEY)
    messages = [{"role": "user", "content": "Say hello."}]

    def create():
        completion = client.chat.completions.create(model=AZURE_DEPLOYMENT, messages=messages)
        content = completion.choices[0].message.content
        expect(content == MOCK_REPLY, f"content {content!r}, expected {MOCK_REPLY!r}")
        usage = (completion.usage.prompt_tokens, completion.usage.completion_tokens)
        expect(usage == (PROMPT_TOKENS, COMPLETION_TOKENS), f"usage {usage}")
        return repr(content)

    def stream():
        pieces = []
        for chunk in client.chat.completions.create(
            model=AZURE_DEPLOYMENT, messages=messages, stream=True
        ):
            expect(chunk.usage is None, f"a usage chunk the client did not ask for: {chunk}")
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
        expect(pieces == STREAM_PARTS, f"deltas {pieces!r}, expected {STREAM_PARTS!r}")
        return f"deltas {''.join(pieces)!r}"

    def revoked():
        revoked_client = client_with(REVOKED_KEY)
        try:
            revoked_client.chat.completions.create(model=AZURE_DEPLOYMENT, messages=messages)
        except openai.PermissionDeniedError as error:
            expect_revoked(error, error.status_code, [error.code, error.body])
            return f"PermissionDeniedError {error.status_code} code={error.code!r}"
        raise CheckFailed("a revoked key was not refused")

    check("azure chat.completions.create", create)
    check("azure chat.completions.create(stream=True)", stream)
    check("azure revoked key", revoked)


# --- google-genai ------------------------------------------------------------------------


def gemini_checks():
    def client_with(key):
        return genai.Client(
            api_key=key, http_options=types.HttpOptions(base_url=f"{GATEWAY_URL}/gemini")
        )

    client = client_with(KEY)

    def generate():
        response = client.models.generate_content(model=GEMINI_MODEL, contents="Say hello.")
        text = response.text
        expect(text is not None and "part" in text, f"text {text!r}")
        usage = response.usage_metadata
        expect(
            usage is not None
            and (usage.prompt_token_count, usage.candidates_token_count)
            == (PROMPT_TOKENS, COMPLETION_TOKENS),
            f"usage {usage}",
        )
        return repr(text)

    def stream():
        pieces, usage = [], None
        for chunk in client.models.generate_content_stream(
            model=GEMINI_MODEL, contents="Say hello."
        ):
            if chunk.text:
                pieces.append(chunk.text)
            usage = chunk.usage_metadata or usage
        expect(pieces == STREAM_PARTS, f"chunks {pieces!r}, expected {STREAM_PARTS!r}")
        expect(
            usage is not None and usage.candidates_token_count == COMPLETION_TOKENS,
            f"last usage {usage}",
        )
        return f"chunks {''.join(pieces)!r}"

    def models():
        names = [model.name for model in client.models.list()]
        expect(f"models/{GEMINI_MODEL}" in names, f"models {names}")
        return ", ".join(names)

    def revoked():
        # Keep the client referenced: a collected genai.Client closes its HTTP client.
        revoked_client = client_with(REVOKED_KEY)
        try:
            revoked_client.models.generate_content(model=GEMINI_MODEL, contents="hi")
        except genai_errors.ClientError as error:
            expect_revoked(error, error.code, [error.status, error.message, error.details])
            return f"ClientError {error.code} {error.message!r}"
        raise CheckFailed("a revoked key was not refused")

    def upload():
        # Two steps: `start` through the gateway, then the bytes to the URL its answer names,
        # which must be the gateway's again (SPEC section 3: the SDK works unchanged).
        uploaded = client.files.upload(
            file=io.BytesIO(UPLOAD_BYTES),
            config=types.UploadFileConfig(mime_type="text/plain", display_name="notes"),
        )
        expect(uploaded.name == "files/mock-upload-1", f"file {uploaded}")
        expect(uploaded.size_bytes == len(UPLOAD_BYTES), f"size {uploaded.size_bytes}")
        return f"{uploaded.name}, {uploaded.size_bytes} bytes"

    check("google-genai models.generate_content", generate)
    check("google-genai models.generate_content_stream", stream)
    check("google-genai revoked key", revoked)
    check("google-genai models.list", models)
    check("google-genai files.upload", upload)


SUITES = {
    "openai": lambda: (openai_checks("/openai/v1"), openai_checks("/v1")),
    "anthropic": anthropic_checks,
    "gemini": gemini_checks,
    # Configured providers (SPEC section 10), as tests/e2e/providers.rs configures them.
    "configured-openai": lambda: (openai_checks("/local-llama/v1"), openai_checks("/groq/v1")),
    "configured-anthropic": lambda: anthropic_checks("/claude-proxy"),
    "azure": azure_checks,
}


def main():
    names = sys.argv[1:] or ["openai", "anthropic", "gemini"]
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        print(f"unknown SDK {unknown}; choose from {list(SUITES)}", flush=True)
        sys.exit(2)
    print(
        f"SDKs: openai {openai.__version__}, anthropic {anthropic.__version__}, "
        f"google-genai {genai.__version__}; gateway {GATEWAY_URL}",
        flush=True,
    )
    for name in names:
        SUITES[name]()
    print(f"all {', '.join(names)} SDK checks passed", flush=True)


if __name__ == "__main__":
    main()
