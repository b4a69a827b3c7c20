"""Backends of every kind at loopback fakes: the env that configures them, for the tests."""

from fakes.anthropic_upstream import FakeAnthropic
from fakes.bedrock_upstream import FakeBedrock
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI
from fakes.responses_upstream import FakeResponses

Fake = FakeOpenAI | FakeAnthropic | FakeBedrock | FakeResponses | FakeGemini

ANTHROPIC_KEY = "sk-ant-canary-0123456789"
OPENAI_KEY = "sk-openai-canary-0123456789"
AWS_SECRET = "aws-secret-canary-0123456789"
BEDROCK_MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
GEMINI_KEY = "AIzaSyCanary-gemini-0123456789"
GEMINI_MODEL = "gemini-3-pro-preview"


def backend_env(name: str, fake: Fake) -> dict[str, str]:
    """The env of one backend named `name` (prefix NAME_) at `fake`, of the fake's kind."""
    p = name.upper() + "_"
    match fake:
        case FakeAnthropic():
            return {p + "KIND": "anthropic", p + "BASE_URL": fake.url, p + "API_KEY": ANTHROPIC_KEY}
        case FakeBedrock():
            return {
                p + "KIND": "bedrock",
                p + "ENDPOINT_URL": fake.url,
                p + "REGION": "us-east-1",
                p + "AWS_ACCESS_KEY_ID": "AKIDCANARY",
                p + "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
                p + "MODEL": BEDROCK_MODEL,
            }
        case FakeGemini():
            return {
                p + "KIND": "gemini",
                p + "BASE_URL": fake.url,
                p + "API_KEY": GEMINI_KEY,
                p + "MODEL": GEMINI_MODEL,
            }
        case FakeOpenAI() | FakeResponses():
            return {p + "BASE_URL": fake.url, p + "API_KEY": OPENAI_KEY}


def chain(*members: tuple[str, Fake], **extra: str) -> dict[str, str]:
    env = {"SIDECAR_BACKENDS": ",".join(name for name, _ in members)}
    for name, fake in members:
        env.update(backend_env(name, fake))
    env.update(extra)
    return env
