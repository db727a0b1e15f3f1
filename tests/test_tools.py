from __future__ import annotations

import logging

import pytest

from llm_embedder_integrations import ChromaStore
from llm_embedder_integrations.evaluation.datasets import render_tool
from llm_embedder_integrations.tools import (
    ToolMatch,
    ToolRouter,
    ToolSpec,
    UnknownToolError,
    render_parameters,
    render_tool_text,
    tool_spec,
)


def _tool(name: str, domain: str, description: str, **params: str) -> dict:
    """A tool dict with an OpenAI-style JSON schema of string parameters."""
    return {
        "name": name,
        "domain": domain,
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
            "required": list(params),
        },
    }


TOOLS = [
    _tool(
        "get_weather_forecast",
        "Weather",
        "Get the weather forecast (temperature, rain, wind) for a city for the next days.",
        city="City name",
        days="Number of days",
    ),
    _tool(
        "get_air_quality",
        "Weather",
        "Current air quality index and pollution levels for a location.",
        location="City or coordinates",
    ),
    _tool(
        "search_flights",
        "Travel",
        "Search flights between two airports on a date and list prices and airlines.",
        origin="Departure airport",
        destination="Arrival airport",
        date="Travel date",
    ),
    _tool(
        "book_hotel",
        "Travel",
        "Book a hotel room in a city for given check-in and check-out dates.",
        city="City",
        check_in="Check-in date",
        check_out="Check-out date",
    ),
    _tool(
        "rent_car",
        "Travel",
        "Reserve a rental car at a pick-up location for a period.",
        location="Pick-up location",
        start="Start date",
        end="End date",
    ),
    _tool(
        "get_train_times",
        "Travel",
        "Timetable of trains between two stations.",
        origin="Departure station",
        destination="Arrival station",
    ),
    _tool(
        "convert_currency",
        "Finance",
        "Convert an amount of money from one currency to another at today's exchange rate.",
        amount="Amount",
        source="Currency code",
        target="Currency code",
    ),
    _tool(
        "get_stock_price",
        "Finance",
        "Latest share price and daily change of a stock by its ticker symbol.",
        ticker="Stock ticker",
    ),
    _tool(
        "calculate_loan_payment",
        "Finance",
        "Monthly payment of a loan or mortgage from the principal, interest rate and term.",
        principal="Loan amount",
        rate="Yearly rate",
        years="Term in years",
    ),
    _tool(
        "list_bank_transactions",
        "Finance",
        "List recent transactions of the user's bank account.",
        account="Account id",
        since="Start date",
    ),
    _tool(
        "create_calendar_event",
        "Calendar",
        "Create a meeting or event in the user's calendar with a title, time and attendees.",
        title="Title",
        start="Start time",
        attendees="Emails",
    ),
    _tool(
        "list_calendar_events",
        "Calendar",
        "List the events in the user's calendar for a day or a week.",
        day="Day",
    ),
    _tool(
        "set_reminder",
        "Productivity",
        "Set a reminder that notifies the user at a given time.",
        text="What to remember",
        time="When",
    ),
    _tool("create_todo_item", "Productivity", "Add a task to the user's to-do list.", task="Task"),
    _tool(
        "send_email",
        "Communication",
        "Send an email message to a recipient with a subject and body.",
        to="Recipient",
        subject="Subject",
        body="Body",
    ),
    _tool(
        "search_email",
        "Communication",
        "Search the user's mailbox for emails matching a query.",
        query="Search terms",
    ),
    _tool(
        "send_sms",
        "Communication",
        "Send a text message (SMS) to a phone number.",
        phone="Phone number",
        message="Text",
    ),
    _tool(
        "post_to_slack",
        "Communication",
        "Post a message to a Slack channel.",
        channel="Channel",
        message="Text",
    ),
    _tool(
        "get_directions",
        "Maps",
        "Driving, walking or transit directions and travel time between two places.",
        origin="Start",
        destination="End",
        mode="Travel mode",
    ),
    _tool(
        "find_nearby_places",
        "Maps",
        "Find restaurants, shops or other places near a location.",
        location="Where",
        category="Kind of place",
    ),
    _tool(
        "geocode_address",
        "Maps",
        "Turn a street address into latitude and longitude coordinates.",
        address="Address",
    ),
    _tool(
        "evaluate_math_expression",
        "Math",
        "Evaluate an arithmetic expression and return the number.",
        expression="Expression",
    ),
    _tool(
        "convert_units",
        "Math",
        "Convert a quantity between units of length, weight, volume or temperature.",
        value="Value",
        source="Unit",
        target="Unit",
    ),
    _tool(
        "solve_equation", "Math", "Solve an algebraic equation for a variable.", equation="Equation"
    ),
    _tool(
        "translate_text",
        "Language",
        "Translate text from one language into another.",
        text="Text",
        target_language="Language",
    ),
    _tool(
        "detect_language", "Language", "Detect which language a text is written in.", text="Text"
    ),
    _tool("summarize_text", "Language", "Summarize a long text into a few sentences.", text="Text"),
    _tool(
        "check_grammar",
        "Language",
        "Find spelling and grammar mistakes in a text and suggest corrections.",
        text="Text",
    ),
    _tool(
        "define_word",
        "Language",
        "Dictionary definition, pronunciation and synonyms of an English word.",
        word="Word",
    ),
    _tool(
        "web_search",
        "Web",
        "Search the web and return the top results with titles and links.",
        query="Search terms",
    ),
    _tool("fetch_webpage", "Web", "Download a web page by URL and return its text.", url="URL"),
    _tool(
        "get_news_headlines",
        "News",
        "Latest news headlines on a topic or from a country.",
        topic="Topic",
    ),
    _tool(
        "get_sports_scores",
        "Sports",
        "Scores and results of recent games for a team or league.",
        team="Team or league",
    ),
    _tool(
        "play_music",
        "Music",
        "Play a song, album or playlist on the user's speaker.",
        query="Song, artist or playlist",
    ),
    _tool(
        "search_recipes",
        "Cooking",
        "Find cooking recipes by dish name or ingredients.",
        ingredients="Ingredients",
    ),
    _tool(
        "get_nutrition_facts",
        "Health",
        "Calories, protein, fat and carbohydrates of a food.",
        food="Food",
    ),
    _tool(
        "log_workout",
        "Health",
        "Record a workout (exercise type, duration, distance) in the user's fitness log.",
        exercise="Exercise",
        minutes="Duration",
    ),
    _tool(
        "book_doctor_appointment",
        "Health",
        "Book an appointment with a doctor or clinic.",
        specialty="Specialty",
        date="Date",
    ),
    _tool(
        "search_products",
        "Shopping",
        "Search an online store for products and compare prices.",
        query="Product",
    ),
    _tool(
        "track_package",
        "Shopping",
        "Track the delivery status of a parcel by its tracking number.",
        tracking_number="Tracking number",
    ),
    _tool(
        "read_file", "Files", "Read the contents of a file from the user's drive.", path="File path"
    ),
    _tool(
        "list_directory", "Files", "List the files and folders in a directory.", path="Directory"
    ),
    _tool(
        "run_sql_query",
        "Data",
        "Run a SQL query against the company database and return the rows.",
        sql="SQL",
    ),
    _tool(
        "plot_chart",
        "Data",
        "Draw a bar, line or pie chart from a table of numbers.",
        data="Table",
        kind="Chart type",
    ),
    _tool(
        "run_python_code",
        "Code",
        "Execute a Python snippet and return its output.",
        code="Python code",
    ),
    _tool(
        "create_github_issue",
        "Code",
        "Open an issue in a GitHub repository with a title and description.",
        repo="Repository",
        title="Title",
        body="Description",
    ),
    _tool("restart_server", "DevOps", "Restart a server or service in production.", host="Host"),
    _tool(
        "set_thermostat",
        "Smart home",
        "Set the target temperature of the home thermostat.",
        celsius="Temperature",
    ),
    _tool(
        "turn_on_lights",
        "Smart home",
        "Switch the lights of a room on or off.",
        room="Room",
        state="on or off",
    ),
    _tool(
        "generate_image",
        "Media",
        "Generate an image from a text description.",
        prompt="Description",
    ),
]

# Requests that name what they need: the shipped MiniLM ranks the right tool first.
REQUESTS = [
    ("Will it rain in Berlin this weekend?", "get_weather_forecast"),
    ("How many euros is 250 US dollars?", "convert_currency"),
    ("Find me a flight from Paris to New York on May 3rd", "search_flights"),
    ("Where is my parcel? Tracking number 1Z999AA10123456784", "track_package"),
    ("How do I get from the airport to downtown by bus?", "get_directions"),
    ("Make it warmer in the house, set it to 22 degrees", "set_thermostat"),
    ("Remind me to call mom at 6pm", "set_reminder"),
    ("Book a room in Rome for two nights", "book_hotel"),
    ("What's Apple's share price today?", "get_stock_price"),
    ("How many calories are in an avocado?", "get_nutrition_facts"),
    ("Open a bug report on our GitHub repo about the login crash", "create_github_issue"),
]
# Harder requests: MiniLM ranks the right tool 2nd to 4th (e.g. "late" pulls set_reminder first
# for the email); a model trained for tool retrieval should do better.
HARDER_REQUESTS = [
    ("Send an email to my manager saying I will be late", "send_email"),
    ("What does the word 'ephemeral' mean?", "define_word"),
    ("Translate 'where is the station' into Spanish", "translate_text"),
    ("Play some jazz in the living room", "play_music"),
    ("Show me all orders from last month in the sales database", "run_sql_query"),
]


@pytest.fixture(scope="module")
def router(encoder) -> ToolRouter:
    router = ToolRouter(ChromaStore(encoder), exact=True)
    router.add_tools(TOOLS)
    return router


@pytest.fixture
def empty_router(encoder, tmp_path) -> ToolRouter:
    return ToolRouter(ChromaStore(encoder, path=tmp_path / "chroma"))


# -- rendering ------------------------------------------------------------------------------------


def test_tool_text_is_readable(router):
    assert router.text("convert_currency") == (
        "convert_currency\n"
        "Domain: Finance\n"
        "Description: Convert an amount of money from one currency to another at today's "
        "exchange rate.\n"
        "Parameters: amount (string): Amount; source (string): Currency code; "
        "target (string): Currency code"
    )


@pytest.mark.parametrize(
    ("parameters", "text"),
    [
        ({"city": {"title": "City", "type": "string"}}, "city (string)"),
        (
            {"type": "object", "properties": {"a": {"type": "integer", "description": "first"}}},
            "a (integer): first",
        ),
        ({"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}, "x (string | null)"),
        (
            {"model_url": "https://tfhub.dev/m/1", "trainable": "False"},
            "model_url: https://tfhub.dev/m/1; trainable: False",
        ),
        (["input_text", "model_url"], "input_text, model_url"),
        ("pretrained", "pretrained"),
        (None, ""),
        ({}, ""),
    ],
)
def test_render_parameters(parameters, text):
    assert render_parameters(parameters) == text


def test_datasets_render_tool_is_the_same_rendering():
    doc = {
        "api_name": "slow_r50",
        "domain": "Video Classification",
        "functionality": "3D ResNet",
        "description": "A video network.",
        "api_arguments": {"pretrained": "True"},
    }
    assert render_tool(doc) == render_tool_text(
        "slow_r50",
        domain="Video Classification",
        functionality="3D ResNet",
        description="A video network.",
    )
    # The router adds the parameters line to the same layout.
    assert tool_spec(doc).text == render_tool(doc) + "\nParameters: pretrained: True"


def test_gorilla_dict_with_its_own_name_keeps_the_api_name_as_title():
    spec = tool_spec({"name": "tf-12", "api_name": "model_id", "description": "Text embedding."})
    assert spec.name == "tf-12"
    assert spec.text == "model_id\nDescription: Text embedding."


# -- routing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("request_text", "expected"), REQUESTS)
def test_routes_handwritten_requests_over_50_tools(router, request_text, expected):
    assert len(router) == 50
    assert router.route(request_text, k=1)[0].name == expected


@pytest.mark.parametrize(("request_text", "expected"), HARDER_REQUESTS)
def test_harder_requests_find_their_tool_in_the_top_5(router, request_text, expected):
    assert expected in [m.name for m in router.route(request_text, k=5)]


def test_route_returns_k_matches_best_first(router):
    matches = router.route("Book a room in Rome for two nights", k=5)
    assert len(matches) == 5
    assert all(isinstance(m, ToolMatch) for m in matches)
    assert matches[0].name == "book_hotel"
    scores = [m.score for m in matches]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[-1] <= scores[0] <= 1


def test_route_batch_agrees_with_route(router):
    requests = [r for r, _ in REQUESTS[:4]]
    batch = router.route_batch(requests, k=3)
    assert [[m.name for m in row] for row in batch] == [
        [m.name for m in router.route(r, k=3)] for r in requests
    ]


def test_route_where_filter(router):
    matches = router.route("Will it rain in Berlin this weekend?", k=3, where={"domain": "Travel"})
    assert {router.spec(m.name).domain for m in matches} == {"Travel"}


def test_k_larger_than_the_toolset(router):
    assert len(router.route("anything", k=500)) == 50


@pytest.mark.parametrize("k", [0, -3, 2.0, True])
def test_k_must_be_positive(router, k):
    with pytest.raises(ValueError, match="`k` must be a positive int"):
        router.route("weather", k=k)


def test_empty_router_routes_nothing(empty_router):
    assert empty_router.route("Will it rain?", k=3) == []


def test_empty_request(router):
    with pytest.raises(ValueError, match=r"`requests\[0\]` is empty"):
        router.route("   ", k=3)


def test_unknown_tool_name_lists_known_names(router):
    with pytest.raises(
        UnknownToolError,
        match="unknown tool 'get_wether'.*50 tools:.*'get_weather_forecast'.*and 42 more",
    ):
        router.tool("get_wether")
    with pytest.raises(KeyError):
        router.spec("get_wether")


def test_tool_without_description_is_rejected_by_name(empty_router):
    tools = [TOOLS[0], {"name": "mystery_tool", "description": "  "}]
    with pytest.raises(ValueError, match="tool 'mystery_tool' has no description"):
        empty_router.add_tools(tools)
    assert len(empty_router) == 0
    assert empty_router.store.count("tool") == 0


def test_tool_without_name(empty_router):
    with pytest.raises(ValueError, match="needs a 'name'"):
        empty_router.add_tools([{"description": "does things"}])


def test_single_tool_must_be_wrapped(empty_router):
    with pytest.raises(TypeError, match="wrap a single tool in a list"):
        empty_router.add_tools(TOOLS[0])


def test_not_a_tool(empty_router):
    with pytest.raises(TypeError, match="cannot read a tool from int"):
        empty_router.add_tools([3])


def test_duplicate_names_upsert(empty_router, caplog):
    old = {"name": "lookup", "description": "Look up the weather forecast for a city."}
    new = {"name": "lookup", "description": "Look up a word in the dictionary."}
    empty_router.add_tools([old])
    empty_router.add_tools([new, {"name": "forecast", "description": "Weather forecast."}])
    assert empty_router.store.count("tool") == 2
    assert empty_router.tool("lookup") is new
    assert empty_router.route("meaning of a word", k=1)[0].name == "lookup"
    with caplog.at_level(logging.WARNING, logger="llm_embedder_integrations.tools"):
        assert empty_router.add_tools([old, new]) == ["lookup", "lookup"]
    assert "'lookup' is given twice; the last one is kept" in caplog.text
    assert empty_router.tool("lookup") is new


def test_remove(empty_router):
    empty_router.add_tools(TOOLS[:3])
    empty_router.remove(["get_air_quality"])
    assert empty_router.names == ["get_weather_forecast", "search_flights"]
    assert empty_router.store.count("tool") == 2
    with pytest.raises(UnknownToolError, match="unknown tool 'get_air_quality'"):
        empty_router.remove(["get_air_quality"])


def test_tool_spec_objects(empty_router):
    spec = ToolSpec("ping_host", "Check whether a host answers on the network.", domain="DevOps")
    empty_router.add_tools([spec])
    assert empty_router.tool("ping_host") is spec


# -- LangChain ------------------------------------------------------------------------------------


def _langchain_tools():
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather and temperature for a city."""
        return f"Sunny in {city}"

    @tool
    def convert_currency(amount: float, source: str, target: str) -> str:
        """Convert an amount of money from one currency to another."""
        return f"{amount} {source} in {target}"

    @tool(parse_docstring=True)
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an email to someone.

        Args:
            to: Recipient address.
            subject: Subject line.
            body: Message text.
        """
        return "sent"

    @tool
    def search_recipes(ingredients: str) -> str:
        """Find cooking recipes that use the given ingredients."""
        return "pasta"

    return [get_weather, convert_currency, send_email, search_recipes]


def test_route_langchain_tools(encoder):
    tools = _langchain_tools()
    router = ToolRouter(ChromaStore(encoder))
    assert router.add_tools(tools) == [t.name for t in tools]
    assert router.text("send_email") == (
        "send_email\nDescription: Send an email to someone.\nParameters: to (string): Recipient "
        "address.; subject (string): Subject line.; body (string): Message text."
    )
    assert router.route("what can I cook with eggs and spinach?", k=1)[0].name == "search_recipes"
    assert router.tool("get_weather") is tools[0]
    assert router.tool("get_weather").invoke({"city": "Oslo"}) == "Sunny in Oslo"


class _RecordingChatModel:
    """Built lazily: a fake chat model for plumbing only (what gets bound, not answer quality).

    It records the tool names of every ``bind_tools`` call and answers with those names.
    """

    @staticmethod
    def make():
        from langchain_core.language_models import BaseChatModel
        from langchain_core.messages import AIMessage
        from langchain_core.outputs import ChatGeneration, ChatResult
        from langchain_core.utils.function_calling import convert_to_openai_tool

        class RecordingChatModel(BaseChatModel):
            bound: list[list[str]] = []

            @property
            def _llm_type(self) -> str:
                return "recording"

            def bind_tools(self, tools, *, tool_choice=None, **kwargs):
                names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
                self.bound.append(names)
                return self.bind(tool_names=names, tool_choice=tool_choice, **kwargs)

            def _generate(self, messages, stop=None, run_manager=None, **kwargs):
                names = ",".join(kwargs.get("tool_names", []))
                content = f"{kwargs.get('tool_choice')}|{names}|{messages[-1].text}"
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content=content))])

        return RecordingChatModel()


def test_tool_routed_chat_model_binds_only_the_routed_tools(router):
    from llm_embedder_integrations.langchain import ToolRoutedChatModel

    chat = _RecordingChatModel.make()
    model = ToolRoutedChatModel(router=router, chat_model=chat, k=2, tool_choice="any")
    answer = model.invoke("Will it rain in Berlin this weekend?")
    assert len(chat.bound) == 1 and len(chat.bound[0]) == 2
    assert chat.bound[0][0] == "get_weather_forecast"
    assert answer.content == f"any|{','.join(chat.bound[0])}|Will it rain in Berlin this weekend?"
    model.invoke("How many euros is 250 US dollars?")
    assert chat.bound[1][0] == "convert_currency"


def test_tool_routed_chat_model_routes_on_the_last_human_message(router):
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from llm_embedder_integrations.langchain import ToolRoutedChatModel

    chat = _RecordingChatModel.make()
    model = ToolRoutedChatModel(router=router, chat_model=chat, k=1)
    messages = [
        SystemMessage("You are a helpful assistant."),
        HumanMessage("Find me a flight from Paris to New York on May 3rd"),
        AIMessage("", tool_calls=[{"name": "search_flights", "args": {}, "id": "c1"}]),
        ToolMessage("AF006 at 10:30", tool_call_id="c1"),
    ]
    assert [m.name for m in model.route(messages)] == ["search_flights"]
    model.invoke(messages)
    assert chat.bound == [["search_flights"]]
    with pytest.raises(ValueError, match="no human message with text"):
        model.invoke([SystemMessage("hello")])


async def test_tool_routed_chat_model_async_and_batch(router):
    from llm_embedder_integrations.langchain import ToolRoutedChatModel

    chat = _RecordingChatModel.make()
    model = ToolRoutedChatModel(router=router, chat_model=chat, k=1)
    answer = await model.ainvoke("Remind me to call mom at 6pm")
    assert answer.content.startswith("None|set_reminder|")
    answers = model.batch(["Remind me to call mom at 6pm", "How many euros is 250 US dollars?"])
    assert [a.content.split("|")[1] for a in answers] == ["set_reminder", "convert_currency"]


def test_tool_routed_chat_model_with_real_langchain_tools(encoder):
    from llm_embedder_integrations.langchain import ToolRoutedChatModel

    router = ToolRouter(ChromaStore(encoder))
    router.add_tools(_langchain_tools())
    chat = _RecordingChatModel.make()
    model = ToolRoutedChatModel(router=router, chat_model=chat, k=2)
    model.invoke("Send a message to bob@example.com about lunch")
    assert chat.bound[0][0] == "send_email"


# -- LlamaIndex -----------------------------------------------------------------------------------


def _llama_index_tools():
    from llama_index.core.tools import FunctionTool

    def get_weather(city: str) -> str:
        """Get the current weather and temperature for a city."""
        return f"Sunny in {city}"

    def multiply(a: float, b: float) -> float:
        """Multiply two numbers and return the product."""
        return a * b

    def translate(text: str, language: str) -> str:
        """Translate a text into another language."""
        return text

    return [FunctionTool.from_defaults(fn) for fn in (get_weather, multiply, translate)]


def test_llama_index_tool_retriever(encoder):
    from llm_embedder_integrations.llama_index import LLMEmbedderToolRetriever

    tools = _llama_index_tools()
    router = ToolRouter(ChromaStore(encoder))
    router.add_tools(tools)
    # LlamaIndex's description is the signature, then the docstring.
    text = router.text("multiply")
    assert text.startswith("multiply\nDescription: multiply(a: ")
    assert text.endswith(
        "Multiply two numbers and return the product.\nParameters: a (number); b (number)"
    )
    retriever = LLMEmbedderToolRetriever(router, similarity_top_k=1)
    [found] = retriever.retrieve("what is 7 times 6?")
    assert found is tools[1]
    assert found.call(a=7, b=6).raw_output == 42


async def test_llama_index_agent_takes_the_tool_retriever(encoder):
    from llama_index.core.agent.workflow import FunctionAgent
    from llama_index.core.llms import MockLLM

    from llm_embedder_integrations.llama_index import LLMEmbedderToolRetriever

    tools = _llama_index_tools()
    router = ToolRouter(ChromaStore(encoder))
    router.add_tools(tools)
    agent = FunctionAgent(
        tool_retriever=LLMEmbedderToolRetriever(router, similarity_top_k=1), llm=MockLLM()
    )
    got = await agent.get_tools("Is it cold in Helsinki today?")
    assert [t.metadata.name for t in got] == ["get_weather"]


def test_llama_index_tool_retriever_needs_llama_index_tools(router):
    from llm_embedder_integrations.llama_index import LLMEmbedderToolRetriever

    retriever = LLMEmbedderToolRetriever(router, similarity_top_k=1)
    with pytest.raises(TypeError, match="'get_weather_forecast' is a dict, not a LlamaIndex tool"):
        retriever.retrieve("Will it rain in Berlin this weekend?")
