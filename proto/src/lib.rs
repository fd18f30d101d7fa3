//! kura.v1 wire API: the .proto files and their generated code arrive with the kurad issue.
