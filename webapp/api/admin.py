from django.contrib import admin

from .models import ApiToken, IdempotencyKey


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "short_key", "created", "last_used")
    readonly_fields = ("key", "created", "last_used")
    search_fields = ("user__username", "name")

    @admin.display(description="key")
    def short_key(self, obj: ApiToken) -> str:
        return obj.key[:6] + "…"


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):
    """Which submission key made which job (read-only: a key is the client's record of what it sent)."""

    list_display = ("key", "owner", "job", "created")
    list_select_related = ("owner", "job")
    readonly_fields = ("owner", "key", "request_sha256", "job", "created")
    search_fields = ("key", "owner__username")

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False
