"""Runtimes move messages between the server loop and the sites; they run no algorithm."""
