-- One database per service: each owns its data (see the brief).
CREATE DATABASE intake;
CREATE DATABASE matching;
CREATE DATABASE notify;
