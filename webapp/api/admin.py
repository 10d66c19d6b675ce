from django.contrib import admin, messages

from .models import ApiToken, IdempotencyKey


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see every token by its first characters, never its key (only a digest is stored); deleting one
    revokes it. A token added here shows its key once, in the message after saving."""

    list_display = ("user", "name", "shown_prefix", "created", "expires", "last_used")
    list_select_related = ("user",)
    fields = ("user", "name", "expires", "shown_prefix", "created", "last_used")
    readonly_fields = ("shown_prefix", "created", "last_used")
    search_fields = ("user__username", "name", "prefix")

    @admin.display(description="key")
    def shown_prefix(self, obj: ApiToken) -> str:
        return f"{obj.prefix}…" if obj.prefix else "(made when saved)"

    def save_model(self, request, obj: ApiToken, form, change: bool) -> None:  # type: ignore[no-untyped-def]
        super().save_model(request, obj, form, change)
        if not change:
            messages.warning(request, f"The key of {obj}: {obj.key} (shown this once: copy it now).")


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    """Which submission key made which job (read-only: a key is the client's record of what it sent)."""

    list_display = ("key", "owner", "job", "created")
    list_select_related = ("owner", "job")
    readonly_fields = ("owner", "key", "request_sha256", "job", "created")
    search_fields = ("key", "owner__username")

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
