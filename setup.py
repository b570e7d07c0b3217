"""Only here for the optional C accelerator of the OTP mode; all metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "qphone.core._otpfast",
            ["qphone/core/_otpfast.c"],
            optional=True,  # without a C compiler qphone runs the pure-Python reference
            extra_compile_args=["-O2"],
        )
    ]
)
