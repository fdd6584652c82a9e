"""The acme plugin's hooks: its settings section and a command that reads it."""

from provender import hookimpl


@hookimpl
def provender_register_settings(register):
    from provender_acme.settings import AcmeSettings  # pydantic: not on the --help path

    register("acme", AcmeSettings)


@hookimpl
def provender_register_commands(cli):
    import click

    @cli.command("acme-greet")
    def greet():
        """Say the configured greeting."""
        from provender import load_settings
        from provender_acme.settings import AcmeSettings

        settings = load_settings().section("acme", AcmeSettings)
        click.echo(" ".join([settings.greeting] * settings.repeat))
