"""The base error of the domain core; the bot and the worker translate it at their edges."""


class LabError(Exception):
    """An error whose message is safe and useful to show to the member who caused it."""

    code: str = "lab_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def user_message(self) -> str:
        return str(self)
