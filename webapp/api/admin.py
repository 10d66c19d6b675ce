from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "name", "short_key", "created", "last_used")
    readonly_fields = ("key", "created", "last_used")
    search_fields = ("user__username", "name")

    @admin.display(description="key")
    def short_key(self, obj: ApiToken) -> str:
        return obj.key[:6] + "…"
