from django.conf import settings


def support(request) -> dict:
    return {"support_email": settings.SUPPORT_EMAILS[0]}
