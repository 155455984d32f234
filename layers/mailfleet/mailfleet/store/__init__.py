"""DynamoDB and Secrets Manager access, one module per table concern. Nothing above this
package builds a DynamoDB expression."""
